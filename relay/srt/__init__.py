"""SRT ingest: the cffi binding to libsrt, the admission decisions and the listener thread."""
