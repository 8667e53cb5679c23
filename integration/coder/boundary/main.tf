# Agent Boundaries (Rust) for a Coder workspace, with the interface of the registry's
# `agent-firewall` module (same variable names where they mean the same, same outputs), so a
# template switches by changing `source`:
#
#   module "agent-firewall" {
#     source   = "./boundary"              # was registry.coder.com/coder/agent-firewall/coder
#     agent_id = coder_agent.main.id
#   }
#   # then: "${module.agent-firewall.agent_firewall_wrapper_path}" \
#   #         --config="${module.agent-firewall.agent_firewall_config_path}" -- claude
#
# Unlike the registry's module it also hands the workspace identity to boundary (for audit
# records written outside Coder), and it runs our binary (binary_path, or install_command).
# integration/tests/coder_module.rs holds it against the registry module's names
# (integration/coder/registry-agent-firewall.json) and against the binary.

terraform {
  required_version = ">= 1.9"
  required_providers {
    coder = {
      source  = "coder/coder"
      version = ">= 2.5"
    }
  }
}

# ---- The registry module's variables ----

variable "agent_id" {
  type        = string
  description = "The coder_agent this firewall belongs to."
}

variable "agent_firewall_version" {
  type        = string
  default     = "latest"
  description = "Passed to install_command as AGENT_FIREWALL_VERSION (the registry module installs this release of Go's firewall)."
}

variable "compile_agent_firewall_from_source" {
  type        = bool
  default     = false
  description = "The registry module's Go build from source; not offered here (boundary comes from binary_path or install_command)."
  validation {
    condition     = !var.compile_agent_firewall_from_source
    error_message = "compile_agent_firewall_from_source builds Go's firewall; with this module boundary comes from binary_path (bake it into the image) or install_command. Remove the variable."
  }
}

variable "use_agent_firewall_directly" {
  type        = bool
  default     = false
  description = "Accepted for the registry interface. This module always runs the boundary binary directly (never a copy of coder)."
}

variable "agent_firewall_config" {
  type        = string
  default     = null
  description = "Inline config.yaml content; replaces the default config. Not together with agent_firewall_config_path."
  validation {
    condition     = !(var.agent_firewall_config != null && var.agent_firewall_config_path != null)
    error_message = "Set agent_firewall_config or agent_firewall_config_path, not both."
  }
}

variable "agent_firewall_config_path" {
  type        = string
  default     = null
  description = "An existing config file in the workspace; when set no config is written and the output points here."
}

variable "pre_install_script" {
  type        = string
  default     = null
  description = "Script run before boundary is installed and configured."
}

variable "post_install_script" {
  type        = string
  default     = null
  description = "Script run after boundary is installed and configured."
}

variable "module_directory" {
  type        = string
  default     = "$HOME/.coder-modules/coder/agent-firewall"
  description = "Where the wrapper (scripts/), the config (config/) and the logs (logs/) go."
}

# ---- Ours: the default config and where boundary comes from ----

variable "allowlist" {
  type        = list(string)
  default     = []
  description = "Allow rules of the default config, after domain=<the Coder deployment>, e.g. \"method=GET,HEAD domain=*.github.com\"."
}

variable "jail_type" {
  type        = string
  default     = "nsjail"
  description = "Default config: nsjail (namespaces) or landjail (Landlock)."
  validation {
    condition     = contains(["nsjail", "landjail"], var.jail_type)
    error_message = "jail_type must be nsjail or landjail."
  }
}

variable "log_level" {
  type        = string
  default     = "warn"
  description = "Default config: error, warn, info or debug."
}

variable "proxy_port" {
  type        = number
  default     = 8087
  description = "Default config: the proxy's port."
}

variable "binary_path" {
  type        = string
  default     = "/usr/local/bin/boundary"
  description = "Where the boundary binary is (baked into the image), or where install_command puts it."
}

variable "install_command" {
  type        = string
  default     = ""
  description = "Shell command that installs boundary at binary_path when it is missing."
}

data "coder_workspace" "me" {}
data "coder_workspace_owner" "me" {}

locals {
  coder_domain = try(regex("^https?://([^/:]+)", data.coder_workspace.me.access_url)[0], "")
  config_yaml = yamlencode({
    allowlist  = concat(local.coder_domain == "" ? [] : ["domain=${local.coder_domain}"], var.allowlist)
    jail_type  = var.jail_type
    log_dir    = "${var.module_directory}/logs/agent_firewall_logs"
    log_level  = var.log_level
    proxy_port = var.proxy_port
  })
  config_content   = var.agent_firewall_config != null ? var.agent_firewall_config : local.config_yaml
  config_file      = "${var.module_directory}/config/config.yaml"
  config_path      = var.agent_firewall_config_path != null ? var.agent_firewall_config_path : local.config_file
  config_b64       = var.agent_firewall_config_path == null ? base64encode(local.config_content) : ""
  pre_install_b64  = var.pre_install_script != null ? base64encode(var.pre_install_script) : ""
  post_install_b64 = var.post_install_script != null ? base64encode(var.post_install_script) : ""
  wrapper          = "${var.module_directory}/scripts/agent-firewall-wrapper.sh"
  # `coder exp sync` name, as the registry module derives it from the module directory.
  dir_parts   = split("/", trimsuffix(var.module_directory, "/"))
  script_name = "${join("-", slice(local.dir_parts, length(local.dir_parts) - 2, length(local.dir_parts)))}-install_script"
}

# Identity for audit records; boundary reads these variables (flag > env > file).
resource "coder_env" "workspace_id" {
  agent_id = var.agent_id
  name     = "BOUNDARY_WORKSPACE_ID"
  value    = data.coder_workspace.me.id
}

resource "coder_env" "template_id" {
  agent_id = var.agent_id
  name     = "BOUNDARY_TEMPLATE_ID"
  value    = data.coder_workspace.me.template_id
}

resource "coder_env" "template_version_id" {
  agent_id = var.agent_id
  name     = "BOUNDARY_TEMPLATE_VERSION_ID"
  value    = data.coder_workspace.me.template_version
}

resource "coder_env" "workspace_owner" {
  agent_id = var.agent_id
  name     = "BOUNDARY_WORKSPACE_OWNER"
  value    = data.coder_workspace_owner.me.name
}

resource "coder_script" "agent_firewall" {
  agent_id           = var.agent_id
  display_name       = "Agent Firewall: Install Script"
  run_on_start       = true
  start_blocks_login = true
  script             = <<-EOT
    #!/bin/sh
    set -eu
    MODULE_DIR="${var.module_directory}"
    BIN="${var.binary_path}"
    CONFIG="${local.config_path}"
    WRAPPER="${local.wrapper}"
    # Templates wait for this script with `coder exp sync want ... <scripts output>`.
    if command -v coder >/dev/null 2>&1 && coder exp sync --help >/dev/null 2>&1; then
      trap 'coder exp sync complete ${local.script_name}' EXIT
      coder exp sync start ${local.script_name}
    fi
    mkdir -p "$MODULE_DIR/scripts" "$MODULE_DIR/config" "$MODULE_DIR/logs/agent_firewall_logs"
    run_user_script() {
      [ -n "$2" ] || return 0
      echo "$2" | base64 -d > "$MODULE_DIR/scripts/$1.sh"
      chmod 755 "$MODULE_DIR/scripts/$1.sh"
      "$MODULE_DIR/scripts/$1.sh"
    }
    run_user_script pre_install '${local.pre_install_b64}'
    if [ ! -x "$BIN" ]; then
      AGENT_FIREWALL_VERSION='${var.agent_firewall_version}' sh -euc "$(echo '${base64encode(var.install_command)}' | base64 -d)"
    fi
    if [ ! -x "$BIN" ]; then
      echo "boundary not found at $BIN: bake it into the image or set install_command" >&2
      exit 1
    fi
    CONFIG_B64='${local.config_b64}'
    if [ -n "$CONFIG_B64" ]; then
      echo "$CONFIG_B64" | base64 -d | sed "s|\$HOME|$HOME|g" > "$CONFIG"
      chmod 600 "$CONFIG"
    fi
    if [ -f "$CONFIG" ]; then
      "$BIN" config --config="$CONFIG" >/dev/null
    fi
    # The wrapper starts the next session: the jail must not be able to rewrite it (nsjail
    # makes the scripts directory read-only, landjail reports a change at exit).
    printf '#!/bin/sh\nexport BOUNDARY_CONFIG="$${BOUNDARY_CONFIG:-%s}"\nexport BOUNDARY_PROTECT_PATHS="%s$${BOUNDARY_PROTECT_PATHS:+,$BOUNDARY_PROTECT_PATHS}"\nexec "%s" "$@"\n' "$CONFIG" "$MODULE_DIR/scripts" "$BIN" > "$WRAPPER"
    chmod 755 "$WRAPPER"
    run_user_script post_install '${local.post_install_b64}'
  EOT
}

output "agent_firewall_wrapper_path" {
  value       = local.wrapper
  description = "Prefix for agent commands: \"<wrapper>\" --config=\"<config path>\" -- claude (the config path is also the wrapper's default)."
}

output "agent_firewall_config_path" {
  value       = local.config_path
  description = "The config file boundary runs with."
}

output "scripts" {
  value       = [local.script_name]
  description = "The `coder exp sync` names of this module's scripts, to wait for before starting an agent."
}
