//! The OpenAPI 3.1 document served at `/api/openapi.json`, kept by hand next to the routes;
//! the `openapi_document_matches_the_router` test requests every operation it lists and
//! fails on one the router lacks.

use serde_json::{json, Value};

/// (method, path, summary, admin only, request schema, success status)
pub type Operation = (
    &'static str,
    &'static str,
    &'static str,
    bool,
    Option<&'static str>,
    u16,
);

pub const OPERATIONS: &[Operation] = &[
    (
        "get",
        "/api/health",
        "Health check (no token needed)",
        false,
        None,
        200,
    ),
    (
        "get",
        "/api/openapi.json",
        "This document",
        false,
        None,
        200,
    ),
    (
        "post",
        "/api/login",
        "Log in to the web UI: a token of its own, in a cookie",
        false,
        Some("Login"),
        200,
    ),
    (
        "post",
        "/api/logout",
        "Clear the login cookie and revoke the token the request carries",
        false,
        None,
        200,
    ),
    ("get", "/api/me", "The calling user", false, None, 200),
    ("get", "/api/users", "List users", true, None, 200),
    (
        "post",
        "/api/users",
        "Create a user; its token is in the answer, once",
        true,
        Some("NewUser"),
        201,
    ),
    (
        "post",
        "/api/users/{name}/tokens",
        "Another token for a user (admins, or the user)",
        false,
        Some("NewToken"),
        201,
    ),
    (
        "get",
        "/api/users/{name}",
        "One user (administrators, or the user)",
        false,
        None,
        200,
    ),
    (
        "patch",
        "/api/users/{name}",
        "Change a user's role, privilege or whether it is disabled (disabling stops its sessions)",
        true,
        Some("UserChange"),
        200,
    ),
    (
        "delete",
        "/api/users/{name}",
        "Delete a user with no notebooks and no running sessions",
        true,
        None,
        200,
    ),
    (
        "get",
        "/api/users/{name}/tokens",
        "A user's tokens that still work (IDs, labels, times; never the tokens)",
        false,
        None,
        200,
    ),
    (
        "delete",
        "/api/users/{name}/tokens/{id}",
        "Revoke a token by its ID (administrators, or the user)",
        false,
        None,
        200,
    ),
    ("get", "/api/runtimes", "List runtimes", false, None, 200),
    (
        "post",
        "/api/runtimes",
        "Register a runtime",
        true,
        Some("RuntimeRegistration"),
        201,
    ),
    (
        "post",
        "/api/runtimes/register",
        "Register a runtime (ArcGIS's path)",
        true,
        Some("RuntimeRegistration"),
        201,
    ),
    (
        "post",
        "/api/runtimes/restore",
        "Restore factory runtimes (the stock stacks in the store); answers a RestoreReport: what was added, reset (updated) or already as the factory has it (unchanged)",
        true,
        None,
        200,
    ),
    ("get", "/api/runtimes/{id}", "One runtime", false, None, 200),
    (
        "patch",
        "/api/runtimes/{id}",
        "Update a runtime (given fields replace stored ones, the others stay; a swap that was derived follows a new maxMemory, a given one stays)",
        true,
        Some("RuntimeChange"),
        200,
    ),
    (
        "delete",
        "/api/runtimes/{id}",
        "Unregister a runtime (refused while notebooks or sessions use it)",
        true,
        None,
        200,
    ),
    (
        "get",
        "/api/site/session-env",
        "What every session gets: variables, files, CA bundle, conda channels (secrets masked)",
        true,
        None,
        200,
    ),
    (
        "put",
        "/api/site/session-env",
        "Replace the site's session environment (masked secrets put back are kept)",
        true,
        Some("SessionEnv"),
        200,
    ),
    (
        "get",
        "/api/runtimes/{id}/session-env",
        "A runtime's session environment, and the effective one (the site's with it over)",
        true,
        None,
        200,
    ),
    (
        "put",
        "/api/runtimes/{id}/session-env",
        "Replace a runtime's session environment",
        true,
        Some("SessionEnv"),
        200,
    ),
    (
        "post",
        "/api/runtimes/{id}/update",
        "Update a runtime (ArcGIS's path)",
        true,
        Some("RuntimeChange"),
        200,
    ),
    (
        "post",
        "/api/runtimes/{id}/deprecate",
        "Deprecate (or undeprecate) a runtime",
        true,
        Some("Deprecate"),
        200,
    ),
    (
        "post",
        "/api/runtimes/{id}/unregister",
        "Unregister a runtime (ArcGIS's path)",
        true,
        None,
        200,
    ),
    (
        "get",
        "/api/runtimes/{id}/manifest",
        "The runtime's manifest: {\"libraries\": [...], \"debian\": [...]} (debian when known)",
        false,
        None,
        200,
    ),
    (
        "put",
        "/api/runtimes/{id}/manifest",
        "Upload a manifest (`conda list --json`, {\"libraries\": [...]} or nbrt's manifest)",
        true,
        Some("Manifest"),
        200,
    ),
    (
        "get",
        "/api/notebooks",
        "List notebooks (own; all for admins)",
        false,
        None,
        200,
    ),
    (
        "post",
        "/api/notebooks",
        "Create a notebook on a runtime",
        false,
        Some("NewNotebook"),
        201,
    ),
    (
        "get",
        "/api/notebooks/{id}",
        "One notebook",
        false,
        None,
        200,
    ),
    (
        "patch",
        "/api/notebooks/{id}",
        "Change a notebook's runtime",
        false,
        Some("NotebookRuntime"),
        200,
    ),
    (
        "delete",
        "/api/notebooks/{id}",
        "Delete a notebook",
        false,
        None,
        200,
    ),
    ("get", "/api/migrations", "List migrations", true, None, 200),
    (
        "post",
        "/api/migrations",
        "Move every notebook of one runtime to another (or plan it: dryRun)",
        true,
        Some("NewMigration"),
        201,
    ),
    (
        "post",
        "/api/migrations/{id}/rollback",
        "Undo a migration",
        true,
        None,
        200,
    ),
    (
        "get",
        "/api/sessions",
        "List sessions (own; all for admins; ?all=true adds ended ones)",
        false,
        None,
        200,
    ),
    (
        "post",
        "/api/sessions",
        "Start the caller's session on a runtime (or return the running one); 409 for a deprecated or disabled runtime. While its image loads the session is starting with the progress in its message",
        false,
        Some("NewSession"),
        202,
    ),
    (
        "get",
        "/api/sessions/{id}",
        "One session (404 for other users' sessions)",
        false,
        None,
        200,
    ),
    (
        "delete",
        "/api/sessions/{id}",
        "Stop a session (its home volume is kept)",
        false,
        None,
        200,
    ),
    (
        "get",
        "/api/sessions/{id}/usage",
        "What a running session uses now (Usage): CPU and memory as its engine measures them, against the runtime's limits (404 for other users' sessions)",
        false,
        None,
        200,
    ),
    (
        "get",
        "/api/audit",
        "The audit log (AuditRecord), newest first: ?limit= (1 to 1000, default 100), ?before=<the answer's next> for the next page, ?action=, ?user=",
        true,
        None,
        200,
    ),
    (
        "get",
        "/metrics",
        "Metrics in Prometheus' text format (a token, any user's, unless the site serves them publicly)",
        false,
        None,
        200,
    ),
    // ArcGIS Notebook Server's Administrator Directory operations (crate::arcgis): form or
    // JSON parameters, f=json|pjson, token= or the bearer token, ArcGIS's reply shapes.
    (
        "get",
        "/arcgis/admin/notebooks/runtimes",
        "ArcGIS: list runtimes",
        false,
        None,
        200,
    ),
    (
        "post",
        "/arcgis/admin/notebooks/runtimes",
        "ArcGIS: list runtimes",
        false,
        None,
        200,
    ),
    (
        "post",
        "/arcgis/admin/notebooks/runtimes/register",
        "ArcGIS: register a runtime",
        true,
        Some("RuntimeRegistration"),
        200,
    ),
    (
        "post",
        "/arcgis/admin/notebooks/runtimes/restoreFactoryRuntimes",
        "ArcGIS: restore factory runtimes",
        true,
        None,
        200,
    ),
    (
        "post",
        "/arcgis/admin/notebooks/runtimes/restore",
        "ArcGIS: restore factory runtimes (the path ArcGIS documents)",
        true,
        None,
        200,
    ),
    (
        "get",
        "/arcgis/admin/notebooks/runtimes/{id}",
        "ArcGIS: one runtime",
        false,
        None,
        200,
    ),
    (
        "post",
        "/arcgis/admin/notebooks/runtimes/{id}",
        "ArcGIS: one runtime",
        false,
        None,
        200,
    ),
    (
        "post",
        "/arcgis/admin/notebooks/runtimes/{id}/update",
        "ArcGIS: change the fields given",
        true,
        Some("RuntimeChange"),
        200,
    ),
    (
        "post",
        "/arcgis/admin/notebooks/runtimes/{id}/unregister",
        "ArcGIS: unregister a runtime",
        true,
        None,
        200,
    ),
    (
        "get",
        "/arcgis/admin/notebooks/runtimes/{id}/manifest",
        "ArcGIS: a runtime's libraries",
        false,
        None,
        200,
    ),
    (
        "post",
        "/arcgis/admin/notebooks/runtimes/{id}/manifest",
        "ArcGIS: a runtime's libraries",
        false,
        None,
        200,
    ),
];

/// Request schemas with no required field: the body may be left out.
const OPTIONAL_BODIES: &[&str] = &["NewToken", "UserChange", "RuntimeChange", "Deprecate"];

/// Operations that answer in ArcGIS's shape and read form-encoded parameters too.
fn is_arcgis(path: &str) -> bool {
    path.starts_with("/arcgis/")
}

fn schemas() -> Value {
    // How sessions reach a runtime's server (apart: one json! of everything nests too deep).
    let runtime_server = json!({"type": "object", "description": "how sessions reach the image's server, read off its [runtime] label (not an input): a Jupyter server under the session's prefix, or another web application (code-server, RStudio) whose prefix the proxy rewrites to httpRewriteUri (Kubeflow's notebooks.kubeflow.org/http-rewrite-uri), ready when readyPath answers, with httpHeadersRequestSet on every request",
        "required": ["server"], "properties": {
            "server": {"type": "string", "enum": ["jupyter", "web"]},
            "httpRewriteUri": {"type": "string"}, "readyPath": {"type": "string"},
            "httpHeadersRequestSet": {"type": "object", "additionalProperties": {"type": "string"},
              "description": "headers the proxy sets on every request to the server (Kubeflow's notebooks.kubeflow.org/http-headers-request-set); ${NB_PREFIX} in a value is the session's URL prefix"}}});
    let unit = json!({"type": "string", "enum": ["g", "m", "k", "b"]});
    // A runtime's GPU count, as input and as shown.
    let gpus_change = json!({"type": ["integer", "null"], "minimum": 0, "maximum": crate::runtime::MAX_GPUS, "description": "GPUs a session of a GPU runtime (dockerRuntime nvidia) gets; nbrt's own field. Left out at registration: the image's [runtime] label's gpus; a new image brings its label's count unless the change gives gpus. Not set: the backend's default (kubernetes: its gpus setting, else 1; docker: 1). docker: a device request for that many GPUs (the engine's nvidia driver: the host's GPUs 0 to N-1, the same ones for every session); kubernetes: nvidia.com/gpu, limit and request; 0: no GPU (NVIDIA_VISIBLE_DEVICES=void). Not a whole number from 0 to 64, or given without a GPU runtime: a 400 naming gpus (null clears it); more than any kubernetes node has: a 409 naming gpus"});
    let gpus_shown = json!({"type": ["integer", "null"], "description": "GPUs a session of this GPU runtime gets; null: the backend's default (see RuntimeChange.gpus)"});
    // What `notebooks::check_name` takes.
    let notebook_name = json!({"type": "string", "minLength": 1, "maxLength": 200,
        "pattern": "^\\s*[^/\\s\\u0000-\\u001f\\u007f-\\u009f][^/\\u0000-\\u001f\\u007f-\\u009f]*$"});
    let mut schemas = json!({
        "Error": {"type": "object", "required": ["error", "status"], "properties": {
            "error": {"type": "string"}, "status": {"type": "integer"},
            "field": {"type": "string", "description": "the input field at fault"}}},
        "ArcgisError": {"type": "object", "required": ["status", "messages", "code"], "properties": {
            "status": {"type": "string", "enum": ["error"]},
            "messages": {"type": "array", "items": {"type": "string"}, "description": "\"<field>: <what>\" when a field is at fault"},
            "code": {"type": "integer", "description": "the HTTP status; 499 no token, 498 a token that is not valid (HTTP 401)"}}},
        "AuditRecord": {"type": "object", "properties": {
            "id": {"type": "integer"}, "time": {"type": "integer", "description": "ms since the epoch"},
            "user": {"type": "string", "description": "(site) for the site's own actions"},
            "tokenId": {"type": ["string", "null"], "description": "the ID of the token the request carried (as token listings show it), never the token"},
            "action": {"type": "string", "description": "runtime.register, runtime.update, runtime.deprecate, runtime.unregister, runtime.restore, session.start, session.stop, session.cull, user.create, token.create, migration.create, ..."},
            "target": {"type": ["string", "null"]}, "detail": {}}},
        "Login": {"type": "object", "additionalProperties": false, "required": ["token"], "properties": {"token": {"type": "string"}}},
        "NewUser": {"type": "object", "additionalProperties": false, "required": ["name"], "properties": {
            "name": {"type": "string", "pattern": "^[a-z][a-z0-9_-]{0,31}$"},
            "role": {"type": "string", "enum": ["admin", "author"], "default": "author"},
            "advanced": {"type": "boolean", "default": false, "description": "the advanced-notebooks privilege"}}},
        "NewToken": {"type": "object", "additionalProperties": false, "properties": {
            "label": {"type": ["string", "null"], "maxLength": 100},
            "expiresIn": {"type": ["integer", "null"], "minimum": 0, "maximum": 315360000,
                "description": "seconds; null or left out: the site's token lifetime; 0: never (administrators)"}}},
        "UserChange": {"type": "object", "additionalProperties": false, "properties": {
            "role": {"type": "string", "enum": ["admin", "author"]},
            "advanced": {"type": "boolean"},
            "disabled": {"type": "boolean"}}},
        "RuntimeRegistration": {"allOf": [{"$ref": "#/components/schemas/RuntimeChange"}],
            "required": ["name", "imageId"],
            "description": "Limit fields left out (maxCpu, maxMemory and its unit, maxSwapMemory, sharedMemory, dockerRuntime, gpus, requiresAdvancedPrivileges, version) come from the image's [runtime] defaults label; without one, maxCpu, maxMemory and maxMemoryUnit are required (a 400 naming the field)."},
        "RuntimeChange": {"type": "object", "additionalProperties": false,
          "description": "Limits past what the engine can give one session (its CPUs and memory; a swarm's largest node's) are refused with a 400 naming the field.",
          "properties": {
            "name": {"type": "string", "minLength": 1, "description": format!("{} (runtimeName accepted)", crate::runtime::input::NAME_RULE)},
            "version": {"type": "string"},
            "containerType": {"type": "string", "enum": ["docker"]},
            "imageId": {"type": "string", "description": "full image ID: sha256:<64 hex>, in the store or the engine"},
            "imagePullString": {"type": "string", "description": "accepted, not used (images are local)"},
            "maxCpu": {"type": "number", "exclusiveMinimum": 0, "description": "cores; maxCPU accepted"},
            "maxMemory": {"type": "number", "exclusiveMinimum": 0},
            "maxMemoryUnit": unit,
            "maxSwapMemory": {"type": "number", "exclusiveMinimum": 0, "description": "memory + swap; default twice maxMemory (derived again when maxMemory changes, unless given)"},
            "maxSwapMemoryUnit": unit,
            "sharedMemory": {"type": "number", "exclusiveMinimum": 0, "description": "/dev/shm; sharedMemorySize accepted"},
            "sharedMemoryUnit": unit,
            "dockerRuntime": {"type": "string", "description": "an engine runtime, e.g. nvidia"},
            "requiresAdvancedPrivileges": {"type": "boolean"},
            "manifest": {"type": ["array", "object"], "description": "conda list --json output or {\"libraries\": [...]}, as JSON (a string is refused; on the ArcGIS paths a form field's text is read as JSON); libraries and libraryManifest accepted"},
            "warmPool": {"type": "integer", "minimum": 0, "maximum": 16, "default": 0, "description": "sessions kept started for this runtime before anyone asks (Docker backend, site as root on the engine's host); a user's start takes one: its URL is /warm/<session id>/"},
            "preloadImage": {"type": "boolean", "default": false, "description": "not stored: put the image where sessions run now (Docker: loaded and tagged nbrt-runtime/<name>:<id>), so the first session does not wait for it"}}},
        "RestoreReport": {"type": "object", "properties": {
            "added": {"type": "array", "items": {"$ref": "#/components/schemas/Runtime"}},
            "updated": {"type": "array", "items": {"$ref": "#/components/schemas/Runtime"}},
            "unchanged": {"type": "array", "items": {"$ref": "#/components/schemas/Runtime"}},
            "missing": {"type": "array", "items": {"type": "string"}, "description": "factory stacks the store does not hold"},
            "skipped": {"type": "array", "items": {"type": "string"}, "description": "factory stacks not restored, with the reason"}}},
        "Runtime": {"type": "object", "properties": {
            "id": {"type": "string"}, "name": {"type": "string"}, "version": {"type": ["string", "null"]},
            "containerType": {"type": "string"}, "imageId": {"type": "string"},
            "maxCpu": {"type": "number"}, "maxMemory": {"type": "number"}, "maxMemoryUnit": unit,
            "maxSwapMemory": {"type": "number"}, "maxSwapMemoryUnit": unit,
            "sharedMemory": {"type": ["number", "null"]}, "sharedMemoryUnit": {"type": ["string", "null"]},
            "dockerRuntime": {"type": ["string", "null"]}, "useGPU": {"type": "boolean"},
            "requiresAdvancedPrivileges": {"type": "boolean"}, "builtin": {"type": "boolean"},
            "deprecated": {"type": "boolean"}, "deprecationDate": {"type": ["integer", "null"]},
            "disabled": {"type": "boolean"}, "isManifestSupported": {"type": "boolean"},
            "libraryCount": {"type": "integer"}, "warmPool": {"type": "integer"}, "warmReady": {"type": "integer", "description": "warm sessions ready now"},
            "server": runtime_server,
            "created": {"type": "integer"}, "updated": {"type": "integer"}}},
        "Deprecate": {"type": "object", "additionalProperties": false, "properties": {"deprecated": {"type": "boolean", "default": true}}},
        "Manifest": {"description": "conda list --json output, ArcGIS's {\"libraries\": [...]}, or nbrt's manifest (with the Debian packages apart); records on channel debian go to the Debian list",
            "oneOf": [{"type": "array", "maxItems": 20000, "items": {"$ref": "#/components/schemas/Library"}},
            {"type": "object", "required": ["libraries"], "properties": {
                "libraries": {"type": "array", "maxItems": 20000, "items": {"$ref": "#/components/schemas/Library"}},
                "debian": {"type": ["array", "null"], "maxItems": 20000, "items": {"$ref": "#/components/schemas/DebianPackage"}}}}]},
        "Library": {"type": "object", "required": ["name", "version"], "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 300}, "version": {"type": "string", "minLength": 1, "maxLength": 300},
            "channel": {"type": ["string", "null"], "maxLength": 300},
            "build_string": {"type": ["string", "null"], "maxLength": 300}, "build_number": {"type": ["integer", "null"], "minimum": 0, "maximum": 9007199254740991_u64},
            "base_url": {"type": ["string", "null"], "maxLength": 300}, "dist_name": {"type": ["string", "null"], "maxLength": 300},
            "platform": {"type": ["string", "null"], "maxLength": 300}}},
        "DebianPackage": {"type": "object", "required": ["name", "version"], "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 300}, "version": {"type": "string", "maxLength": 300},
            "architecture": {"type": ["string", "null"], "maxLength": 300}}},
        "NewNotebook": {"type": "object", "additionalProperties": false, "required": ["name", "runtimeId"], "properties": {
            "name": notebook_name, "runtimeId": {"type": "string"}}},
        "NotebookRuntime": {"type": "object", "additionalProperties": false, "required": ["runtimeId"], "properties": {"runtimeId": {"type": "string"}}},
        "NewMigration": {"type": "object", "additionalProperties": false, "required": ["from", "to"], "properties": {
            "from": {"type": "string"}, "to": {"type": "string"}, "dryRun": {"type": "boolean", "default": false}}},
        "SessionEnv": {"type": "object", "additionalProperties": false,
            "description": "what sessions get besides the image; a secret is shown as value/content null with set: true, and put back that way it is kept",
            "properties": {
            "env": {"type": ["array", "null"], "items": {"type": "object", "additionalProperties": false, "required": ["name"], "properties": {
                "name": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
                "value": {"type": ["string", "null"]},
                "secret": {"type": "boolean", "description": "also implied by names like *PASSWORD*, *TOKEN*, *SECRET*, *_KEY and by URLs with a password"},
                "set": {"type": "boolean"}}}},
            "files": {"type": ["array", "null"], "items": {"type": "object", "additionalProperties": false, "required": ["path"], "properties": {
                "path": {"type": "string", "description": "absolute; not /proc, /sys, /dev, /etc/hosts, /etc/hostname, /etc/resolv.conf"},
                "content": {"type": ["string", "null"]},
                "mode": {"type": "string", "default": "0644 (0640 when secret)"},
                "secret": {"type": "boolean"}, "set": {"type": "boolean"}}}},
            "caBundle": {"type": ["string", "null"], "description": "PEM certificates, added to the image's CA bundle"},
            "caCertificates": {"description": "shown: how many certificates caBundle has (an integer; any value is ignored on input)"},
            "condaChannels": {"type": ["array", "null"], "items": {"type": "string"}}}},
        "NewSession": {"type": "object", "additionalProperties": false, "required": ["runtimeId"], "properties": {
            "runtimeId": {"type": "string"},
            "wait": {"type": "boolean", "default": false, "description": "answer once the session is ready (or ended)"}}},
        "Usage": {"type": "object", "required": ["available", "time"], "properties": {
            "available": {"type": "boolean", "description": "false when the engine cannot say (no metrics API, no engine of the session's node, not running): reason says why"},
            "reason": {"type": "string"},
            "cpu": {"type": ["number", "null"], "description": "cores in use over the last interval (docker stats' CPU % / 100; Kubernetes: metrics-server's window)"},
            "cpuLimit": {"type": ["number", "null"], "description": "the runtime's maxCpu, cores"},
            "cpuPercent": {"type": ["number", "null"], "description": "cpu as a percentage of cpuLimit"},
            "memory": {"type": "integer", "description": "bytes in use without the page cache the kernel can take back (as docker stats and kubectl top show)"},
            "memoryLimit": {"type": ["integer", "null"], "description": "bytes: the engine's limit, else the runtime's"},
            "memoryPercent": {"type": ["number", "null"]},
            "time": {"type": "integer", "description": "ms since the epoch"}}},
        "Session": {"type": "object", "properties": {
            "id": {"type": "string"}, "user": {"type": "string"}, "runtimeId": {"type": "string"},
            "state": {"type": "string", "enum": ["starting", "ready", "stopped", "culled", "oom-killed", "failed"]},
            "message": {"type": "string", "description": "while starting, what it waits for (e.g. loading image 40% (120 of 300 MB)); once ended, why"}, "containerName": {"type": "string"},
            "containerId": {"type": ["string", "null"]}, "url": {"type": "string"},
            "created": {"type": "integer"}, "ready": {"type": ["integer", "null"]},
            "ended": {"type": ["integer", "null"]}, "lastActivity": {"type": ["integer", "null"]},
            "cullAt": {"type": ["integer", "null"], "description": "when the culler stops it if its kernels stay idle (ms since the epoch); null when culling is off or it is not ready"},
            "oomKilled": {"type": "boolean"}}}
    });
    // Apart too: one more field in the json! above nests too deep.
    schemas["RuntimeChange"]["properties"]["gpus"] = gpus_change;
    schemas["Runtime"]["properties"]["gpus"] = gpus_shown;
    schemas
}

pub fn document() -> Value {
    let mut paths = serde_json::Map::new();
    for (method, path, summary, admin, schema, status) in OPERATIONS {
        let error = if is_arcgis(path) {
            "ArcgisError"
        } else {
            "Error"
        };
        let mut op = json!({
            "summary": summary,
            "responses": {
                status.to_string(): {"description": "success"},
                "default": {"description": "error", "content": {"application/json": {
                    "schema": {"$ref": format!("#/components/schemas/{error}")}}}}
            }
        });
        if *admin {
            op["description"] = json!("administrators only (403 otherwise)");
        }
        if matches!(
            *path,
            "/api/health" | "/api/openapi.json" | "/api/login" | "/api/logout"
        ) {
            op["security"] = json!([]);
        }
        let params: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        if !params.is_empty() {
            op["parameters"] = Value::Array(params);
        }
        if let Some(s) = schema {
            let schema = json!({"$ref": format!("#/components/schemas/{s}")});
            // Bodies whose every field is optional may be left out.
            let required = !OPTIONAL_BODIES.contains(s);
            op["requestBody"] = if is_arcgis(path) {
                json!({"required": required, "content": {
                    "application/x-www-form-urlencoded": {"schema": schema},
                    "application/json": {"schema": schema}}})
            } else {
                json!({"required": required, "content": {"application/json": {"schema": schema}}})
            };
        }
        if is_arcgis(path) {
            let mut params = op["parameters"].as_array().cloned().unwrap_or_default();
            // The token may also come as `token=` (query or form), as ArcGIS clients send it.
            params.push(json!({"name": "f", "in": "query", "schema": {"type": "string", "enum": ["json", "pjson"], "default": "json"}}));
            op["parameters"] = Value::Array(params);
        }
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[*method] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "nbrt site",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Runtimes (ArcGIS Notebook Server's fields), notebooks, migrations and sessions on the Docker engine. Notebook servers are reached at /user/<name>/<runtimeId>/ (HTTP and websockets, owner only). The same runtime registry is also served on ArcGIS Notebook Server's Administrator Directory paths under /arcgis/admin/notebooks/runtimes. Every change is in the audit log (/api/audit); /metrics is in Prometheus' text format."
        },
        "components": {
            "schemas": schemas(),
            "securitySchemes": {
                "token": {"type": "http", "scheme": "bearer"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": crate::auth::COOKIE}
            }
        },
        "security": [{"token": []}, {"cookie": []}],
        "paths": paths
    })
}
