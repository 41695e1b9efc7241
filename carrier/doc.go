// Package carrier is the mobile side of messor: sessions to hosts over SSH
// and SFTP, the local buffer of carried files, pickup from outboxes,
// dropoff into inboxes, resume and verification. It speaks to a stock
// OpenSSH sshd and to a messor agent alike (see package protocol for the
// contract) and never imports package agent. A big file's partial is
// noted in the buffer's directory (placing/) before the round trip that
// puts it in place, and a partial a later visit finds under such a note is
// never resumed: it may be a second name of the file delivered
// (placing.go).
package carrier
