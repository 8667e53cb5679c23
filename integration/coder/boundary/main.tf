# Agent Boundaries (Rust) for a Coder workspace: writes the policy to
# ~/.config/coder_boundary/config.yaml, hands the workspace identity to boundary through the
# environment, and exposes a wrapper to prefix agent commands with.
#
#   module "boundary" {
#     source    = "./integration/coder/boundary"
#     agent_id  = coder_agent.dev.id
#     allowlist = ["domain=dev.coder.com", "domain=api.anthropic.com"]
#   }
#   # then run agents as: ${module.boundary.wrapper} -- claude

terraform {
  required_providers {
    coder = {
      source  = "coder/coder"
      version = ">= 2.5"
    }
  }
}

variable "agent_id" {
  type        = string
  description = "The coder_agent this boundary setup belongs to."
}

variable "allowlist" {
  type        = list(string)
  default     = []
  description = "Allow rules, one per element, e.g. \"method=GET,HEAD domain=*.github.com\"."
}

variable "config_yaml" {
  type        = string
  default     = ""
  description = "A whole config.yaml (inline). When set, allowlist, jail_type, log_dir, log_level and proxy_port are ignored."
}

variable "jail_type" {
  type        = string
  default     = "nsjail"
  description = "nsjail (namespaces) or landjail (Landlock)."
  validation {
    condition     = contains(["nsjail", "landjail"], var.jail_type)
    error_message = "jail_type must be nsjail or landjail."
  }
}

variable "log_dir" {
  type    = string
  default = "/tmp/boundary_logs"
}

variable "log_level" {
  type    = string
  default = "warn"
}

variable "proxy_port" {
  type    = number
  default = 8087
}

variable "binary_path" {
  type        = string
  default     = "/usr/local/bin/boundary"
  description = "Where the boundary binary is (baked into the image), or where install_command puts it."
}

variable "install_command" {
  type        = string
  default     = ""
  description = "Optional shell command that installs boundary at binary_path when it is missing."
}

data "coder_workspace" "me" {}
data "coder_workspace_owner" "me" {}

locals {
  config_yaml = var.config_yaml != "" ? var.config_yaml : yamlencode({
    allowlist  = var.allowlist
    jail_type  = var.jail_type
    log_dir    = var.log_dir
    log_level  = var.log_level
    proxy_port = var.proxy_port
  })
  wrapper = "$HOME/.local/bin/boundary-wrapper"
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

resource "coder_script" "boundary_setup" {
  agent_id           = var.agent_id
  display_name       = "Agent Boundaries"
  run_on_start       = true
  start_blocks_login = true
  script             = <<-EOT
    #!/bin/sh
    set -eu
    if [ ! -x "${var.binary_path}" ]; then
      echo '${base64encode(var.install_command)}' | base64 -d | sh -eu
    fi
    if [ ! -x "${var.binary_path}" ]; then
      echo "boundary not found at ${var.binary_path}: bake it into the image or set install_command" >&2
      exit 1
    fi
    mkdir -p "$HOME/.config/coder_boundary" "$HOME/.local/bin"
    echo '${base64encode(local.config_yaml)}' | base64 -d > "$HOME/.config/coder_boundary/config.yaml"
    chmod 600 "$HOME/.config/coder_boundary/config.yaml"
    "${var.binary_path}" config >/dev/null
    printf '#!/bin/sh\nexec "%s" "$@"\n' "${var.binary_path}" > "${local.wrapper}"
    chmod 755 "${local.wrapper}"
  EOT
}

output "wrapper" {
  value       = local.wrapper
  description = "Prefix for agent commands: \"<wrapper> -- claude\"."
}
