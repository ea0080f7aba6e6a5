"""In-process fakes of the external services syncbridge talks to."""
