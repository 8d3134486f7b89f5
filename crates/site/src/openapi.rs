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
        "Set the login cookie from a token (web UI)",
        false,
        Some("Login"),
        200,
    ),
    (
        "post",
        "/api/logout",
        "Clear the login cookie",
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
    ("get", "/api/runtimes", "List runtimes", false, None, 200),
    (
        "post",
        "/api/runtimes",
        "Register a runtime",
        true,
        Some("RuntimeInput"),
        201,
    ),
    (
        "post",
        "/api/runtimes/register",
        "Register a runtime (ArcGIS's path)",
        true,
        Some("RuntimeInput"),
        201,
    ),
    (
        "post",
        "/api/runtimes/restore",
        "Restore factory runtimes (the stock stacks in the store)",
        true,
        None,
        200,
    ),
    ("get", "/api/runtimes/{id}", "One runtime", false, None, 200),
    (
        "patch",
        "/api/runtimes/{id}",
        "Update a runtime (given fields replace stored ones)",
        true,
        Some("RuntimeInput"),
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
        "post",
        "/api/runtimes/{id}/update",
        "Update a runtime (ArcGIS's path)",
        true,
        Some("RuntimeInput"),
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
        "The runtime's libraries as {\"libraries\": [...]}",
        false,
        None,
        200,
    ),
    (
        "put",
        "/api/runtimes/{id}/manifest",
        "Upload a manifest (`conda list --json` or {\"libraries\": [...]})",
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
        "Start the caller's session on a runtime (or return the running one)",
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
];

fn schemas() -> Value {
    let unit = json!({"type": "string", "enum": ["g", "m", "k", "b"]});
    json!({
        "Error": {"type": "object", "required": ["error", "status"], "properties": {
            "error": {"type": "string"}, "status": {"type": "integer"},
            "field": {"type": "string", "description": "the input field at fault"}}},
        "Login": {"type": "object", "required": ["token"], "properties": {"token": {"type": "string"}}},
        "NewUser": {"type": "object", "required": ["name"], "properties": {
            "name": {"type": "string", "pattern": "^[a-z][a-z0-9_-]{0,31}$"},
            "role": {"type": "string", "enum": ["admin", "author"], "default": "author"},
            "advanced": {"type": "boolean", "default": false, "description": "the advanced-notebooks privilege"}}},
        "NewToken": {"type": "object", "properties": {"label": {"type": "string"}}},
        "RuntimeInput": {"type": "object", "additionalProperties": false, "properties": {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "containerType": {"type": "string", "enum": ["docker"]},
            "imageId": {"type": "string", "description": "full image ID: sha256:<64 hex>, in the store or the engine"},
            "imagePullString": {"type": "string", "description": "accepted, not used (images are local)"},
            "maxCpu": {"type": "number", "exclusiveMinimum": 0, "description": "cores; maxCPU accepted"},
            "maxMemory": {"type": "number", "exclusiveMinimum": 0},
            "maxMemoryUnit": unit,
            "maxSwapMemory": {"type": "number", "exclusiveMinimum": 0, "description": "memory + swap; default twice maxMemory"},
            "maxSwapMemoryUnit": unit,
            "sharedMemory": {"type": "number", "exclusiveMinimum": 0, "description": "/dev/shm; sharedMemorySize accepted"},
            "sharedMemoryUnit": unit,
            "dockerRuntime": {"type": "string", "description": "an engine runtime, e.g. nvidia"},
            "requiresAdvancedPrivileges": {"type": "boolean"},
            "manifest": {"description": "conda list --json output or {\"libraries\": [...]}"}}},
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
            "libraryCount": {"type": "integer"}, "created": {"type": "integer"}, "updated": {"type": "integer"}}},
        "Deprecate": {"type": "object", "properties": {"deprecated": {"type": "boolean", "default": true}}},
        "Manifest": {"oneOf": [{"type": "array", "items": {"$ref": "#/components/schemas/Library"}},
            {"type": "object", "properties": {"libraries": {"type": "array", "items": {"$ref": "#/components/schemas/Library"}}}}]},
        "Library": {"type": "object", "required": ["name", "version"], "properties": {
            "name": {"type": "string"}, "version": {"type": "string"}, "channel": {"type": ["string", "null"]},
            "build_string": {"type": ["string", "null"]}, "build_number": {"type": ["integer", "null"]},
            "base_url": {"type": ["string", "null"]}, "dist_name": {"type": ["string", "null"]},
            "platform": {"type": ["string", "null"]}}},
        "NewNotebook": {"type": "object", "required": ["name", "runtimeId"], "properties": {
            "name": {"type": "string"}, "runtimeId": {"type": "string"}}},
        "NotebookRuntime": {"type": "object", "required": ["runtimeId"], "properties": {"runtimeId": {"type": "string"}}},
        "NewMigration": {"type": "object", "required": ["from", "to"], "properties": {
            "from": {"type": "string"}, "to": {"type": "string"}, "dryRun": {"type": "boolean", "default": false}}},
        "NewSession": {"type": "object", "required": ["runtimeId"], "properties": {
            "runtimeId": {"type": "string"},
            "wait": {"type": "boolean", "default": false, "description": "answer once the session is ready (or ended)"}}},
        "Session": {"type": "object", "properties": {
            "id": {"type": "string"}, "user": {"type": "string"}, "runtimeId": {"type": "string"},
            "state": {"type": "string", "enum": ["starting", "ready", "stopped", "culled", "oom-killed", "failed"]},
            "message": {"type": "string"}, "containerName": {"type": "string"},
            "containerId": {"type": ["string", "null"]}, "url": {"type": "string"},
            "created": {"type": "integer"}, "ready": {"type": ["integer", "null"]},
            "ended": {"type": ["integer", "null"]}, "lastActivity": {"type": ["integer", "null"]},
            "oomKilled": {"type": "boolean"}}}
    })
}

pub fn document() -> Value {
    let mut paths = serde_json::Map::new();
    for (method, path, summary, admin, schema, status) in OPERATIONS {
        let mut op = json!({
            "summary": summary,
            "responses": {
                status.to_string(): {"description": "success"},
                "default": {"description": "error", "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/Error"}}}}
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
            op["requestBody"] = json!({"required": true, "content": {"application/json": {
                "schema": {"$ref": format!("#/components/schemas/{s}")}}}});
        }
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[*method] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "nbrt site",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Runtimes (ArcGIS Notebook Server's fields), notebooks, migrations and sessions on the Docker engine. Notebook servers are reached at /user/<name>/<runtimeId>/ (HTTP and websockets, owner only)."
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
