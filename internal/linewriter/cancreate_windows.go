package linewriter

import "syscall"

// fileAddFile is the directory access right to create a file in it
// (FILE_ADD_FILE, the same bit as FILE_WRITE_DATA).
const fileAddFile = 0x2

// canCreateIn reports why a file could not be created in the directory
// dir, or nil if it could. Windows has no faccessat: the directory is
// opened asking for the right to add a file, so the system checks the
// directory's ACL against the process's token as it would for the create,
// and the handle is closed at once; nothing is created. What differs from
// the Linux check: there is no search (execute) permission to check, since
// Windows grants traversal to every user by default; and a process that has
// enabled its backup or restore privilege passes here
// (FILE_FLAG_BACKUP_SEMANTICS, needed to open a directory, lets those
// privileges through) even where a plain create would be refused.
func canCreateIn(dir string) error {
	p, err := syscall.UTF16PtrFromString(dir)
	if err != nil {
		return err
	}
	h, err := syscall.CreateFile(p, fileAddFile,
		syscall.FILE_SHARE_READ|syscall.FILE_SHARE_WRITE|syscall.FILE_SHARE_DELETE,
		nil, syscall.OPEN_EXISTING, syscall.FILE_FLAG_BACKUP_SEMANTICS, 0)
	if err != nil {
		return err
	}
	return syscall.CloseHandle(h)
}
