"""The files API: add/update/get/delete file rows through the SQL functions of the same names."""

from locaria_batch.files.api import (
    FileNotFound,
    add_file,
    cancel_file,
    delete_file,
    download_attributes,
    download_sources,
    get_file,
    get_files,
    register_upload,
    request_download,
    retry_file,
    update_file,
)

__all__ = [
    "FileNotFound",
    "add_file",
    "cancel_file",
    "delete_file",
    "download_attributes",
    "download_sources",
    "get_file",
    "get_files",
    "register_upload",
    "request_download",
    "retry_file",
    "update_file",
]
