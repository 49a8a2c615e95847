"""openapi_contract.py — check real lanesd answers against api/openapi.yaml.

Used by the contract tests (t_api_spec.sh, t_api_contract.sh). For one
answer it checks that
  * the status code is documented for that operation,
  * the Content-Type is one the response declares (a body-less status
    such as 204 must come without a body),
  * a JSON body validates against the declared schema, and every line of
    an NDJSON body validates against the line schema.
The validator covers the OpenAPI 3.0 subset the spec uses: $ref, type,
nullable, required, properties, additionalProperties: false, items, enum,
oneOf/anyOf/allOf, pattern, minimum/maximum, format: date-time.

Also a minimal HTTP/1.1 client over a unix socket (Connection: close,
chunked decoding) so the tests need nothing beyond python3 and PyYAML.
"""
import json
import re
import socket

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


class Spec:
    def __init__(self, path):
        import yaml  # only the spec checks need PyYAML; http() does not
        self.doc = yaml.safe_load(open(path))

    def resolve(self, node):
        while isinstance(node, dict) and "$ref" in node:
            ref = node["$ref"]
            assert ref.startswith("#/"), ref
            cur = self.doc
            for part in ref[2:].split("/"):
                cur = cur[part]
            node = cur
        return node

    def operation(self, method, template):
        item = self.doc["paths"].get(template)
        return item and item.get(method.lower())

    # ---- schema validation -------------------------------------------------
    def validate(self, schema, value, where="$"):
        """List of problems (empty: valid)."""
        schema = self.resolve(schema)
        if not schema:
            return []
        if value is None:
            if schema.get("nullable") or "type" not in schema and not any(
                k in schema for k in ("oneOf", "anyOf", "allOf", "properties")
            ):
                return []
            return ["%s: null where %s is not nullable" % (where, schema.get("type", "a value"))]
        out = []
        if "allOf" in schema:
            for sub in schema["allOf"]:
                out += self.validate(sub, value, where)
        for key in ("oneOf", "anyOf"):
            if key in schema:
                fits = [s for s in schema[key] if not self.validate(s, value, where)]
                if not fits or (key == "oneOf" and len(fits) > 1 and not _distinct_required(self, schema[key])):
                    out.append("%s: matches %d of the %s alternatives" % (where, len(fits), key))
        t = schema.get("type")
        checks = {
            "object": lambda v: isinstance(v, dict),
            "array": lambda v: isinstance(v, list),
            "string": lambda v: isinstance(v, str),
            "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
            "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
            "boolean": lambda v: isinstance(v, bool),
        }
        if t and not checks[t](value):
            return out + ["%s: %s where the spec says %s" % (where, type(value).__name__, t)]
        if "enum" in schema and value not in schema["enum"]:
            out.append("%s: %r not in enum %r" % (where, value, schema["enum"]))
        if isinstance(value, str):
            if "pattern" in schema and not re.search(schema["pattern"], value):
                out.append("%s: %r does not match %s" % (where, value, schema["pattern"]))
            if schema.get("format") == "date-time" and not RFC3339.match(value):
                out.append("%s: %r is not an RFC 3339 date-time" % (where, value))
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if "minimum" in schema and value < schema["minimum"]:
                out.append("%s: %r below minimum %r" % (where, value, schema["minimum"]))
            if "maximum" in schema and value > schema["maximum"]:
                out.append("%s: %r above maximum %r" % (where, value, schema["maximum"]))
        if isinstance(value, dict):
            props = schema.get("properties", {})
            for k in schema.get("required", []):
                if k not in value:
                    out.append("%s: required field %r missing" % (where, k))
            for k, v in value.items():
                if k in props:
                    out += self.validate(props[k], v, "%s.%s" % (where, k))
                elif schema.get("additionalProperties") is False:
                    out.append("%s: field %r not in the spec" % (where, k))
                elif isinstance(schema.get("additionalProperties"), dict):
                    out += self.validate(schema["additionalProperties"], v, "%s.%s" % (where, k))
        if isinstance(value, list) and "items" in schema:
            for i, v in enumerate(value):
                out += self.validate(schema["items"], v, "%s[%d]" % (where, i))
        return out

    # ---- one answer --------------------------------------------------------
    def check(self, method, template, status, ctype, body):
        """Problems with one real answer to METHOD TEMPLATE."""
        op = self.operation(method, template)
        name = "%s %s -> %d" % (method.upper(), template, status)
        if not op:
            return ["%s: no such operation in the spec" % name]
        responses = op.get("responses", {})
        resp = responses.get(str(status)) or responses.get("%dXX" % (status // 100)) or responses.get("default")
        if resp is None:
            return ["%s: status not documented (documented: %s)" % (name, ", ".join(sorted(responses)))]
        resp = self.resolve(resp)
        content = resp.get("content")
        if not content:
            if body and status != 101:
                return ["%s: a body (%d bytes) where the spec documents none" % (name, len(body))]
            return []
        media = (ctype or "").split(";")[0].strip().lower()
        if media not in content:
            if not body and status in (200, 201) and "application/x-tar" in content:
                return []
            return ["%s: Content-Type %r not among %s" % (name, ctype, ", ".join(content))]
        schema = (content[media] or {}).get("schema")
        if not schema:
            return []
        if media == "application/json":
            try:
                value = json.loads(body)
            except ValueError as e:
                return ["%s: body is not JSON (%s): %r" % (name, e, body[:200])]
            return ["%s: %s" % (name, p) for p in self.validate(schema, value)]
        if media == "application/x-ndjson":
            line_schema = self.resolve(schema)
            if line_schema.get("type") == "string":
                return []
            out = []
            for i, line in enumerate(body.splitlines()):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except ValueError:
                    out.append("%s: NDJSON line %d is not JSON: %r" % (name, i, line[:200]))
                    continue
                out += ["%s: line %d: %s" % (name, i, p) for p in self.validate(line_schema, value)]
            return out
        return []


def _distinct_required(spec, alternatives):
    """oneOf alternatives told apart by a required key may overlap loosely."""
    keys = [tuple(spec.resolve(a).get("required", [])) for a in alternatives]
    return all(keys) and len(set(keys)) == len(keys)


def http(sock_path, method, url, body=None, ctype="application/json", timeout=120, max_bytes=8 << 20):
    """One request on its own connection: (status, content-type, body)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(sock_path)
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    req = "%s %s HTTP/1.1\r\nHost: lanes\r\nConnection: close\r\n" % (method, url)
    if body is not None:
        req += "Content-Type: %s\r\nContent-Length: %d\r\n" % (ctype, len(body))
    try:
        s.sendall(req.encode() + b"\r\n" + (body or b""))
    except (BrokenPipeError, ConnectionResetError):
        pass
    raw = b""
    try:
        while len(raw) < max_bytes:
            chunk = s.recv(65536)
            if not chunk:
                break
            raw += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    s.close()
    head, _, data = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    if "chunked" in hdrs.get("transfer-encoding", "").lower():
        out, rest = b"", data
        while rest:
            size, _, rest = rest.partition(b"\r\n")
            n = int(size.split(b";")[0] or b"0", 16)
            if n == 0:
                break
            out += rest[:n]
            rest = rest[n + 2:]
        data = out
    return status, hdrs.get("content-type", ""), data
