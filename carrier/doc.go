// Package carrier is the mobile side of messor: sessions to hosts over SSH
// and SFTP, the local buffer of carried files, pickup from outboxes,
// dropoff into inboxes, resume and verification. It speaks to a stock
// OpenSSH sshd and to a messor agent alike (see package protocol for the
// contract) and never imports package agent.
package carrier
