#!/usr/bin/env python3
"""Parses the Coder module with a real HCL parser (python-hcl2) and prints, as JSON, what the
test needs to hold it against the registry module and the binary: its variable and output
names, the environment variables it sets, the config keys it writes, the workspace attributes
it reads, and its setup script rendered for the given variable values.

Usage: check_module.py MAIN_TF BINARY [VARS_JSON]
VARS_JSON overrides variable defaults; "_access_url" stands for the workspace's access URL.
The locals the script uses are computed here the way main.tf writes them (Terraform itself
cannot run offline: it would download the coder provider)."""
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


def b64(text):
    return base64.b64encode(text.encode()).decode()


def yaml_text(config):
    """The config as YAML (JSON is YAML); key order as main.tf's yamlencode sorts them."""
    return json.dumps(dict(sorted(config.items())))


def compute_locals(v, yaml_keys):
    """main.tf's locals, for the values in v."""
    m = re.match(r"^https?://([^/:]+)", v.get("_access_url", ""))
    coder_domain = m.group(1) if m else ""
    config = {}
    for key in yaml_keys:
        if key == "allowlist":
            config[key] = ([f"domain={coder_domain}"] if coder_domain else []) + v["allowlist"]
        elif key == "log_dir":
            config[key] = f"{v['module_directory']}/logs/agent_firewall_logs"
        else:
            config[key] = v[key]
    content = v["agent_firewall_config"] if v["agent_firewall_config"] is not None else yaml_text(config)
    config_file = f"{v['module_directory']}/config/config.yaml"
    parts = v["module_directory"].rstrip("/").split("/")
    return {
        "config_path": v["agent_firewall_config_path"] or config_file,
        "config_b64": b64(content) if v["agent_firewall_config_path"] is None else "",
        "pre_install_b64": b64(v["pre_install_script"]) if v["pre_install_script"] is not None else "",
        "post_install_b64": b64(v["post_install_script"]) if v["post_install_script"] is not None else "",
        "wrapper": f"{v['module_directory']}/scripts/agent-firewall-wrapper.sh",
        "script_name": "-".join(parts[-2:]) + "-install_script",
    }


def main(path, binary, overrides):
    with open(path) as f:
        text = f.read()
    doc = hcl2.loads(text)
    variables = {}
    for block in doc.get("variable", []):
        for name, body in block.items():
            variables[unquote(name)] = unquote(body.get("default"))
    names = list(variables)
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
    m = re.search(r"yamlencode\(\{(.*)\}\)", locals_["config_yaml"], re.S)
    yaml_keys = re.findall(r"(?:^|[{,\n])\s*(\w+)\s*=(?!=)", m.group(1))
    data_refs = sorted(set(re.findall(r"data\.(coder_workspace(?:_owner)?)\.me\.(\w+)", text)))

    variables["binary_path"] = binary
    variables.update(overrides)
    computed = compute_locals(variables, yaml_keys)
    script = scripts[0]
    script = re.sub(r"\$\{base64encode\(var\.(\w+)\)\}",
                    lambda v: b64(str(variables[v.group(1)])), script)
    script = re.sub(r"(?<!\$)\$\{var\.(\w+)\}", lambda v: str(variables[v.group(1)]), script)
    script = re.sub(r"(?<!\$)\$\{local\.(\w+)\}", lambda v: computed[v.group(1)], script)
    leftover = re.findall(r"(?<!\$)\$\{[a-z]+\.[^}]*\}|%\{", script)
    if leftover:
        sys.exit(f"check_module.py cannot render {leftover}; teach compute_locals the new local")
    script = script.replace("$${", "${")
    json.dump({
        "variables": names,
        "env_names": env_names,
        "yaml_keys": yaml_keys,
        "data_refs": data_refs,
        "script": script,
        "locals": computed,
        "outputs": [unquote(k) for b in doc.get("output", []) for k in b],
    }, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]) if len(sys.argv) > 3 else {})
