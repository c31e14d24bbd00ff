"""views for the usage app; filled by the issue that brings its behaviour."""
