"""The servers the suite measures Relay against, and the processes around them; each is started
on free ports as an unprivileged process and stopped by the suite. `pyrtmp_server.py` runs in
pyrtmp's own venv, not Relay's."""
