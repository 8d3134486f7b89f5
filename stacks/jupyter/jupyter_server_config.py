# The image's Jupyter Server defaults, kept where docker-stacks keeps them
# (/etc/jupyter/jupyter_server_config.py), so that everything a user gives wins: arguments
# and aliases on the command line (`start-notebook.py --ip=127.0.0.1 --port=9999`),
# NOTEBOOK_ARGS, and settings in ~/.jupyter or other config directories.
#
# nbrt-init (crates/init) passes no setting of its own on the command line; it reads the
# same variables at start, checks them and logs what they mean.
import os
from pathlib import Path

c = get_config()  # noqa: F821

# Every IPv4 and IPv6 address of the container ("" binds both wildcards); NBRT_IP sets one.
c.ServerApp.ip = os.environ.get("NBRT_IP", "")
c.ServerApp.open_browser = False
# The port is Jupyter Server's own default from JUPYTER_PORT (8888 in the image).

# Deleting a file deletes it: containers have no desktop trash.
c.FileContentsManager.delete_to_trash = False

if "JUPYTERHUB_API_TOKEN" not in os.environ:
    # Kubeflow: the notebook is served under NB_PREFIX, in the dashboard's iframe.
    prefix = os.environ.get("NB_PREFIX", "")
    if prefix:
        c.ServerApp.base_url = prefix
    origin = os.environ.get("NBRT_CORS_ORIGIN", "*")
    if origin:
        c.ServerApp.tornado_settings = {
            "headers": {"Access-Control-Allow-Origin": origin}
        }
    # No token where the platform in front authenticates: NBRT_AUTH=none, or Kubeflow
    # (NB_PREFIX on Kubernetes) unless NBRT_AUTH=token. Same rule as nbrt-init's.
    auth = os.environ.get("NBRT_AUTH", "")
    kubeflow = bool(prefix) and bool(os.environ.get("KUBERNETES_SERVICE_HOST", ""))
    if auth == "none" or (auth == "" and kubeflow):
        c.IdentityProvider.token = ""
        c.PasswordIdentityProvider.hashed_password = ""

# GEN_CERT: nbrt-init made a self-signed certificate (and key) at start.
if "GEN_CERT" in os.environ:
    from jupyter_core.paths import jupyter_data_dir

    pem = Path(jupyter_data_dir()) / "notebook.pem"
    if pem.is_file():
        c.ServerApp.certfile = str(pem)
        c.ServerApp.keyfile = str(pem)

# NB_UMASK is applied by nbrt-init to the server process.
