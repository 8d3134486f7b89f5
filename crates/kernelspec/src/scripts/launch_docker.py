# The Docker part: a container on the engine the docker-provisioner talks to.


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
            "io.nbrt.kernelspec": args.kernel_spec or "",
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


if __name__ == "__main__":
    run(
        container_spec,
        launch,
        description="start a remote kernel's container (nbrt kernel spec)",
        kernel_spec_help="the kernel spec's name (a container label)",
        pulls=["never", "missing", "always"],
        pull_default="never",
        dry_run_help="print the container settings as JSON",
    )
