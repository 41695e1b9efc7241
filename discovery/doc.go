// Package discovery finds the hosts a carrier can visit: names from the
// pickup hosts file, resolved through ~/.ssh/config, and messor agents heard
// over mDNS. A Finder combines them by one precedence rule: names the user
// configured are dialled as configured, and mDNS only adds agents the user
// pinned with `messor trust` (see Finder and protocol/doc.go).
package discovery
