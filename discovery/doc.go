// Package discovery finds the hosts a carrier can visit: names from the
// pickup hosts file, resolved through ~/.ssh/config, and messor agents heard
// over mDNS. Every source yields Host values; Merge combines them.
package discovery
