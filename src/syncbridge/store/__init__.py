"""The profile cache: schema, engine setup, migrations and bulk writes."""
