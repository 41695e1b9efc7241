package protocol

// MatchPattern reports whether s matches the OpenSSH wildcard pattern p,
// where * stands for any run of bytes and ? for exactly one byte, as
// OpenSSH's match_pattern does. It is the one matcher for the OpenSSH files
// messor reads: an authorized_keys from= list (agent) and a ssh_config
// Host/Match pattern (discovery). Case is the caller's business.
func MatchPattern(s, p string) bool {
	for len(p) > 0 {
		switch p[0] {
		case '*':
			for len(p) > 0 && p[0] == '*' {
				p = p[1:]
			}
			if p == "" {
				return true
			}
			for i := 0; i <= len(s); i++ {
				if MatchPattern(s[i:], p) {
					return true
				}
			}
			return false
		case '?':
			if s == "" {
				return false
			}
		default:
			if s == "" || s[0] != p[0] {
				return false
			}
		}
		s, p = s[1:], p[1:]
	}
	return s == ""
}
