"""The built-in jobs: file_loader (formats in) and file_download (formats out)."""
