# The Kubernetes part: a pod through the kubernetes-provisioner's cluster. The pod is
# described here (no template): labels kernel_id / component=kernel / app as the provisioner
# expects, the kernel user from KERNEL_UID/KERNEL_GID, resources from KERNEL_CPUS,
# KERNEL_MEMORY, KERNEL_GPUS (requests) and their *_LIMIT forms, volumes from KERNEL_VOLUMES
# and KERNEL_VOLUME_MOUNTS (YAML or JSON lists), and the spec's image pull policy. What every
# pod of nbrt's has (user, group, seccomp, restart policy, no privilege escalation, the
# autoscaler annotation, the GPU resource's name) is POD_CONVENTIONS, the same as session
# pods of `nbrt serve --backend kubernetes`.

POD_VARS = ("KERNEL_NAMESPACE", "KERNEL_POD_NAME")
PULL_POLICY = {"never": "Never", "missing": "IfNotPresent", "always": "Always"}


def structured(environ, name):
    """A KERNEL_* value holding a list (YAML when PyYAML is there, else JSON)."""
    text = environ.get(name)
    if not text:
        return None
    try:
        import yaml

        value = yaml.safe_load(text)
    except ImportError:
        value = json.loads(text)
    if not isinstance(value, list):
        sys.exit(f"error: {name} must be a list, got {type(value).__name__}")
    return value


def pod(args, environ):
    image = environ.get("KERNEL_IMAGE")
    if not image:
        sys.exit("error: KERNEL_IMAGE is not set: the kernel spec names no image_name")
    kernel_id = args.kernel_id if given(args.kernel_id) else environ.get("KERNEL_ID", "")
    name = environ.get("KERNEL_POD_NAME")
    namespace = environ.get("KERNEL_NAMESPACE")
    if not (kernel_id and name and namespace):
        sys.exit("error: KERNEL_ID, KERNEL_POD_NAME and KERNEL_NAMESPACE come from the kubernetes-provisioner")
    container = {
        "name": name,
        "image": image,
        "imagePullPolicy": PULL_POLICY[args.pull],
        "env": [{"name": k, "value": v} for k, v in sorted(kernel_env(args, environ, POD_VARS).items())],
    }
    requests, limits = {}, {}
    for var, key in (("CPUS", "cpu"), ("MEMORY", "memory"), ("GPUS", POD_CONVENTIONS["gpuResource"])):
        if environ.get(f"KERNEL_{var}"):
            requests[key] = environ[f"KERNEL_{var}"]
        if environ.get(f"KERNEL_{var}_LIMIT"):
            limits[key] = environ[f"KERNEL_{var}_LIMIT"]
    if requests or limits:
        container["resources"] = {k: v for k, v in (("requests", requests), ("limits", limits)) if v}
    if environ.get("KERNEL_WORKING_DIR"):
        container["workingDir"] = environ["KERNEL_WORKING_DIR"]
    mounts = structured(environ, "KERNEL_VOLUME_MOUNTS")
    if mounts:
        container["volumeMounts"] = mounts
    container["securityContext"] = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": POD_CONVENTIONS["dropCapabilities"]},
    }
    security = {}
    for var, key in (("KERNEL_UID", "runAsUser"), ("KERNEL_GID", "runAsGroup")):
        value = environ.get(var, str(POD_CONVENTIONS[key]))
        if not value.isdigit():
            sys.exit(f"error: {var} {value!r} must be a number")
        security[key] = int(value)
    security["fsGroup"] = security["runAsGroup"]
    security["fsGroupChangePolicy"] = POD_CONVENTIONS["fsGroupChangePolicy"]
    security["seccompProfile"] = {"type": POD_CONVENTIONS["seccompProfile"]}
    spec = {
        "restartPolicy": POD_CONVENTIONS["restartPolicy"],
        "serviceAccountName": environ.get("KERNEL_SERVICE_ACCOUNT_NAME", "default"),
        "securityContext": security,
        "containers": [container],
    }
    volumes = structured(environ, "KERNEL_VOLUMES")
    if volumes:
        spec["volumes"] = volumes
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                "kernel_id": kernel_id,
                "component": "kernel",
                "app": environ.get("GP_APP_NAME", "gateway-provisioners"),
                "source": "nbrt-kernelspec",
            },
            "annotations": dict(POD_CONVENTIONS["annotations"]),
        },
        "spec": spec,
    }


def launch(body, _pull):
    from kubernetes import client, config
    from kubernetes.client.rest import ApiException

    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()
    else:
        config.load_kube_config()
    namespace = body["metadata"]["namespace"]
    try:
        client.CoreV1Api().create_namespaced_pod(namespace=namespace, body=body)
    except ApiException as e:
        if e.status != 409:  # a restart finds its pod already there
            raise


if __name__ == "__main__":
    run(
        pod,
        launch,
        description="start a remote kernel's pod (nbrt kernel spec)",
        kernel_spec_help="the kernel spec's name",
        pulls=sorted(PULL_POLICY),
        pull_default="missing",
        dry_run_help="print the pod as JSON instead of creating it",
    )
