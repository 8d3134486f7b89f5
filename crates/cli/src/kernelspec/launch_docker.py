# Written by `nbrt kernelspec` (nbrt). Run by Gateway Provisioners' docker-provisioner on the
# server host: creates the kernel container and exits; the kernel reports back to the
# response address itself.
#
# Unlike a plain provisioner launch, the container gets only what the launcher protocol
# needs plus the names this kernel spec declares (--env-names): never the server's own
# environment (its HOME, tokens, cloud credentials, ...).
import argparse
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


def kernel_env(args, environ):
    env = {}
    for name in [n for n in (args.env_names or "").split(",") if n]:
        if name in environ:
            env[name] = environ[name]
    for name in PROTOCOL_VARS:
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


def container_spec(args, environ):
    image = environ.get("KERNEL_IMAGE")
    if not image:
        sys.exit("error: KERNEL_IMAGE is not set: the kernel spec names no image_name")
    kernel_id = args.kernel_id if given(args.kernel_id) else environ.get("KERNEL_ID", "")
    if not kernel_id:
        sys.exit("error: no kernel id (--kernel-id)")
    name = environ.get("KERNEL_USERNAME", "kernel") + "-" + kernel_id
    uid = environ.get("KERNEL_UID", "1000")
    gid = environ.get("KERNEL_GID", "100")
    if not uid.isdigit() or not gid.isdigit():
        sys.exit(f"error: KERNEL_UID {uid!r} and KERNEL_GID {gid!r} must be numbers")
    # The provisioner looks the container's address up on GP_DOCKER_NETWORK: attach it there.
    network = (
        environ.get("GP_DOCKER_NETWORK")
        or environ.get("DOCKER_NETWORK")
        or environ.get("EG_DOCKER_NETWORK")
        or "bridge"
    )
    spec = {
        "image": image,
        "name": name,
        "hostname": name[:63],
        "user": f"{uid}:{gid}",
        "group_add": sorted({gid, "100"}),
        "labels": {
            "kernel_id": kernel_id,
            "component": "kernel",
            "app": "gateway-provisioners",
            "org.nbrt.kernelspec": args.kernel_spec or "",
        },
        "environment": kernel_env(args, environ),
        "network": network,
        "auto_remove": environ.get("GP_REMOVE_CONTAINER", environ.get("REMOVE_CONTAINER", "true")).lower()
        == "true",
    }
    if environ.get("KERNEL_WORKING_DIR"):
        spec["working_dir"] = environ["KERNEL_WORKING_DIR"]
    return spec


def launch(spec, pull):
    from docker.client import DockerClient
    from docker.errors import ImageNotFound

    client = DockerClient.from_env()
    image = spec.pop("image")
    if pull == "always":
        client.images.pull(image)
    try:
        container = client.containers.create(image, **spec)
    except ImageNotFound:
        if pull != "missing":
            sys.exit(
                f"error: the image {image} is not in this Docker engine and this kernel spec does not "
                f"pull (--pull never): load it first (nbrt load IMAGE --tag {image})"
            )
        client.images.pull(image)
        container = client.containers.create(image, **spec)
    container.start()


def main(argv=None):
    p = argparse.ArgumentParser(description="start a remote kernel's container (nbrt kernel spec)")
    p.add_argument("--kernel-id")
    p.add_argument("--port-range")
    p.add_argument("--response-address")
    p.add_argument("--public-key")
    p.add_argument("--spark-context-initialization-mode", dest="spark_context_init_mode", default="none")
    p.add_argument("--kernel-class-name")
    p.add_argument("--transport-encryption")
    p.add_argument("--env-names", help="comma-separated names passed from this environment to the kernel")
    p.add_argument("--kernel-spec", help="the kernel spec's name (a container label)")
    p.add_argument("--pull", choices=["never", "missing", "always"], default="never")
    p.add_argument("--dry-run", action="store_true", help="print the container settings as JSON")
    args = p.parse_args(argv)
    spec = container_spec(args, dict(os.environ))
    if args.dry_run:
        import json

        json.dump(spec, sys.stdout, indent=2, sort_keys=True)
        print()
        return
    launch(spec, args.pull)


if __name__ == "__main__":
    main()
