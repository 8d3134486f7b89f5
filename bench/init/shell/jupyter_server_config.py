# Bench fixture only: the server settings docker-stacks keeps in /etc/jupyter (§1.5),
# matched to what nbrt-init passes on the command line.
import os

c = get_config()  # noqa: F821
c.ServerApp.ip = "0.0.0.0"
c.ServerApp.open_browser = False
c.ServerApp.tornado_settings = {"headers": {"Access-Control-Allow-Origin": "*"}}
if "NB_UMASK" in os.environ:
    os.umask(int(os.environ["NB_UMASK"], 8))
