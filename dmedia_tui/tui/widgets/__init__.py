"""Small dashboard widgets: each renders plain data handed down by its screen."""
