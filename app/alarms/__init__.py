"""Alarms in the server: feeds monitor.AlarmEngine, stores its records, broadcasts them."""
