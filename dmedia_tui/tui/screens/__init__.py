"""Screens: the dashboard and the drill-downs (store, file, events, alert), modals."""
