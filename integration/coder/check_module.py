#!/usr/bin/env python3
"""Parses the Coder module with a real HCL parser (python-hcl2) and prints, as JSON, what the
test needs to hold it against the binary: the environment variables it sets, the config keys it
writes, the workspace attributes it reads, and its setup script rendered with the defaults."""
import base64
import json
import re
import sys
import textwrap

import hcl2


def unquote(s):
    """python-hcl2 keeps the quotes of string literals; heredocs arrive as "<<-EOT ... EOT"."""
    if not (isinstance(s, str) and len(s) >= 2 and s[0] == '"' and s[-1] == '"'):
        return s
    inner = s[1:-1]
    m = re.match(r"<<(-?)(\w+)\n(.*)\n\s*\2$", inner, re.S)
    if m:
        return textwrap.dedent(m.group(3)) if m.group(1) else m.group(3)
    return json.loads(s)


def main(path, binary):
    with open(path) as f:
        text = f.read()
    doc = hcl2.loads(text)
    variables = {}
    for block in doc.get("variable", []):
        for name, body in block.items():
            variables[unquote(name)] = unquote(body.get("default"))
    env_names, scripts = [], []
    for block in doc.get("resource", []):
        for rtype, by_name in block.items():
            for _name, body in by_name.items():
                if unquote(rtype) == "coder_env":
                    env_names.append(unquote(body["name"]))
                if unquote(rtype) == "coder_script":
                    scripts.append(unquote(body["script"]))
    locals_ = {}
    for block in doc.get("locals", []):
        locals_.update(block)
    m = re.search(r"yamlencode\(\{(.*?)\}\)", locals_["config_yaml"], re.S)
    yaml_keys = re.findall(r"(\w+)\s*=\s*var\.(\w+)", m.group(1))
    data_refs = sorted(set(re.findall(r"data\.(coder_workspace(?:_owner)?)\.me\.(\w+)", text)))

    variables["binary_path"] = binary
    variables["allowlist"] = ["domain=dev.coder.com", "method=GET,HEAD domain=*.github.com"]
    config = {key: variables[var] for key, var in yaml_keys}
    wrapper = "$HOME/.local/bin/boundary-wrapper"
    script = scripts[0]
    script = script.replace("${base64encode(local.config_yaml)}",
                            base64.b64encode(json.dumps(config).encode()).decode())
    script = script.replace("${local.wrapper}", wrapper)
    script = re.sub(r"\$\{base64encode\(var\.(\w+)\)\}",
                    lambda v: base64.b64encode(str(variables[v.group(1)]).encode()).decode(), script)
    script = re.sub(r"\$\{var\.(\w+)\}", lambda v: str(variables[v.group(1)]), script)
    json.dump({
        "env_names": env_names,
        "yaml_keys": [k for k, _ in yaml_keys],
        "data_refs": data_refs,
        "script": script,
        "outputs": [unquote(k) for b in doc.get("output", []) for k in b],
    }, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
