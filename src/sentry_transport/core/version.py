VERSION = "0.1.0"
CLIENT = f"sentry-transport/{VERSION}"
