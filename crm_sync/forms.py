"""forms for the crm_sync app; filled by the issue that brings its behaviour."""
