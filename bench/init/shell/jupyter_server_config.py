# Bench fixture only: the server settings docker-stacks keeps in /etc/jupyter (§1.5),
# matched to the stock image's own /etc/jupyter/jupyter_server_config.py.
import os

c = get_config()  # noqa: F821
c.ServerApp.ip = ""
c.ServerApp.open_browser = False
c.ServerApp.tornado_settings = {"headers": {"Access-Control-Allow-Origin": "*"}}
if "NB_UMASK" in os.environ:
    os.umask(int(os.environ["NB_UMASK"], 8))
