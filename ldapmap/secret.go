package ldapmap

import "switchboard/internal/secret"

// Secret is the type of Options.BindPassword: secret.String, which prints
// as "***" everywhere. The name is kept for callers that write
// ldapmap.Secret(pw); new code writes secret.String(pw).
type Secret = secret.String
