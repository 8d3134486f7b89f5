# Written by `nbrt kernelspec` (nbrt). Run by Gateway Provisioners' kubernetes-provisioner on
# the server host: creates the kernel pod and exits; the kernel reports back to the response
# address itself.
#
# The pod's environment holds only what the launcher protocol needs plus the names this
# kernel spec declares (--env-names): never the server's own environment. The pod is
# described here (no template): labels kernel_id / component=kernel / app as the provisioner
# expects, the kernel user from KERNEL_UID/KERNEL_GID, resources from KERNEL_CPUS,
# KERNEL_MEMORY, KERNEL_GPUS (requests) and their *_LIMIT forms, volumes from KERNEL_VOLUMES
# and KERNEL_VOLUME_MOUNTS (YAML or JSON lists), and the spec's image pull policy.
import argparse
import json
import os
import sys

PROTOCOL_VARS = (
    "KERNEL_ID",
    "KERNEL_LANGUAGE",
    "KERNEL_USERNAME",
    "KERNEL_NAMESPACE",
    "KERNEL_POD_NAME",
    "RESPONSE_ADDRESS",
    "PUBLIC_KEY",
    "PORT_RANGE",
    "KERNEL_SPARK_CONTEXT_INIT_MODE",
    "KERNEL_CLASS_NAME",
    "TRANSPORT_ENCRYPTION",
)

PULL_POLICY = {"never": "Never", "missing": "IfNotPresent", "always": "Always"}


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
        "env": [{"name": k, "value": v} for k, v in sorted(kernel_env(args, environ).items())],
    }
    requests, limits = {}, {}
    for var, key in (("CPUS", "cpu"), ("MEMORY", "memory"), ("GPUS", "nvidia.com/gpu")):
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
    security = {}
    for var, key in (("KERNEL_UID", "runAsUser"), ("KERNEL_GID", "runAsGroup")):
        value = environ.get(var, "1000" if var == "KERNEL_UID" else "100")
        if not value.isdigit():
            sys.exit(f"error: {var} {value!r} must be a number")
        security[key] = int(value)
    security["fsGroup"] = security["runAsGroup"]
    spec = {
        "restartPolicy": "Never",
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
            "annotations": {"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"},
        },
        "spec": spec,
    }


def launch(body):
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


def main(argv=None):
    p = argparse.ArgumentParser(description="start a remote kernel's pod (nbrt kernel spec)")
    p.add_argument("--kernel-id")
    p.add_argument("--port-range")
    p.add_argument("--response-address")
    p.add_argument("--public-key")
    p.add_argument("--spark-context-initialization-mode", dest="spark_context_init_mode", default="none")
    p.add_argument("--kernel-class-name")
    p.add_argument("--transport-encryption")
    p.add_argument("--env-names", help="comma-separated names passed from this environment to the kernel")
    p.add_argument("--kernel-spec", help="the kernel spec's name")
    p.add_argument("--pull", choices=sorted(PULL_POLICY), default="missing")
    p.add_argument("--dry-run", action="store_true", help="print the pod as JSON instead of creating it")
    args = p.parse_args(argv)
    body = pod(args, dict(os.environ))
    if args.dry_run:
        json.dump(body, sys.stdout, indent=2, sort_keys=True)
        print()
        return
    launch(body)


if __name__ == "__main__":
    main()
