package localnettest

import "golang.org/x/sys/windows"

// The errors a refused connect and a bind to a held port give: Winsock's
// own codes, which syscall's ECONNREFUSED and EADDRINUSE do not match.
var errConnRefused, errAddrInUse error = windows.WSAECONNREFUSED, windows.WSAEADDRINUSE
