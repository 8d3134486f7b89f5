# Configuration file for jupyter-server (~/.jupyter/jupyter_server_config.py).
#
# Settings here override the image's defaults in /etc/jupyter/jupyter_server_config.py;
# command-line arguments and NOTEBOOK_ARGS override both. For example:
#
# c.ServerApp.root_dir = "/home/jovyan/work"
# c.ServerApp.terminado_settings = {"shell_command": ["/bin/bash"]}

c = get_config()  # noqa: F821
