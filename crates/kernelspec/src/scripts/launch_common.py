# Written by `nbrt kernelspec` (nbrt). Run by a Gateway Provisioners provisioner on the
# server host: creates the kernel's container or pod and exits; the kernel reports back to
# the response address itself.
#
# Unlike a plain provisioner launch, the kernel gets only what the launcher protocol needs
# plus the names this kernel spec declares (--env-names): never the server's own
# environment (its HOME, tokens, cloud credentials, ...).
import argparse
import json
import os
import sys

PROTOCOL_VARS = (
    "KERNEL_ID",
    "KERNEL_LANGUAGE",
    "KERNEL_USERNAME",
    "RESPONSE_ADDRESS",
    "PUBLIC_KEY",
    "PORT_RANGE",
    "KERNEL_SPARK_CONTEXT_INIT_MODE",
    "KERNEL_CLASS_NAME",
    "TRANSPORT_ENCRYPTION",
)


def given(value):
    """An argument the provisioner filled in (unknown placeholders stay as `{name}`)."""
    return bool(value) and not (value.startswith("{") and value.endswith("}"))


def kernel_env(args, environ, more_vars=()):
    """The kernel's environment: declared names, then the protocol's (`more_vars` too)."""
    env = {}
    for name in [n for n in (args.env_names or "").split(",") if n]:
        if name in environ:
            env[name] = environ[name]
    for name in PROTOCOL_VARS + tuple(more_vars):
        if name in environ:
            env[name] = environ[name]
    for name, value in (
        ("KERNEL_ID", args.kernel_id),
        ("PORT_RANGE", args.port_range),
        ("RESPONSE_ADDRESS", args.response_address),
        ("PUBLIC_KEY", args.public_key),
        ("KERNEL_SPARK_CONTEXT_INIT_MODE", args.spark_context_init_mode),
        ("KERNEL_CLASS_NAME", args.kernel_class_name),
        ("TRANSPORT_ENCRYPTION", args.transport_encryption),
    ):
        if given(value):
            env[name] = value
    env.pop("PATH", None)
    return env


def run(describe, launch, description, kernel_spec_help, pulls, pull_default, dry_run_help):
    """Parse the provisioner's arguments; print what `describe` makes (--dry-run) or launch it."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--kernel-id")
    p.add_argument("--port-range")
    p.add_argument("--response-address")
    p.add_argument("--public-key")
    p.add_argument("--spark-context-initialization-mode", dest="spark_context_init_mode", default="none")
    p.add_argument("--kernel-class-name")
    p.add_argument("--transport-encryption")
    p.add_argument("--env-names", help="comma-separated names passed from this environment to the kernel")
    p.add_argument("--kernel-spec", help=kernel_spec_help)
    p.add_argument("--pull", choices=pulls, default=pull_default)
    p.add_argument("--dry-run", action="store_true", help=dry_run_help)
    args = p.parse_args()
    described = describe(args, dict(os.environ))
    if args.dry_run:
        json.dump(described, sys.stdout, indent=2, sort_keys=True)
        print()
        return
    launch(described, args.pull)


# ---------------------------------------------------------------------------------------
