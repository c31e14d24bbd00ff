"""views for the licenses app; filled by the issue that brings its behaviour."""
