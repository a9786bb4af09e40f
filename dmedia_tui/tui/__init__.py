"""The full-screen Textual app: app.py, its screens, widgets and the data layer they read."""
