package discovery

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
)

// tokenFileRecheck is the least time between two looks (a stat) at the ACL
// token file for a new token. Blocking queries come about once a wait per
// watched service, paced at most one per 100ms each: the file is looked at
// no more than once a second whatever the number of watches.
const tokenFileRecheck = time.Second

// maxOldTokens is how many tokens used before the current one are still
// removed from error text.
const maxOldTokens = 4

// consulToken is the ACL token a client sends. A token from a file
// (consul.token_file, CONSUL_HTTP_TOKEN_FILE) follows the file: a
// credential agent (Vault agent, a Kubernetes projected secret) rotates it
// by rewriting the file and later revokes the old token. The file is
// looked at again when its name, size or modification time changed (at
// most every recheck), and read again at once when Consul refuses the
// token (see reload). A file that cannot be read, or is empty, while it is
// being rewritten keeps the token last read.
type consulToken struct {
	path    string // "" for a token that never changes
	recheck time.Duration
	now     func() time.Time

	mu      sync.Mutex
	token   string
	old     []string // the tokens sent before, newest last, for scrub
	info    os.FileInfo
	checked time.Time
}

// newConsulToken is a token that never changes.
func newConsulToken(token string) *consulToken { return &consulToken{token: token} }

// newConsulTokenFile reads the token in path; an empty file gives
// fallback. A file that cannot be read is an error.
func newConsulTokenFile(path, fallback string) (*consulToken, error) {
	t := &consulToken{path: path, token: fallback, recheck: tokenFileRecheck, now: time.Now}
	info, err := os.Stat(path)
	if err == nil {
		t.checked = t.now()
		err = t.read(info)
	}
	if err != nil {
		return nil, fmt.Errorf("Error loading token file %s : %s", path, err)
	}
	return t, nil
}

// get returns the token to send, first looking at the file when recheck
// has passed since the last look.
func (t *consulToken) get() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.path != "" {
		if now := t.now(); now.Sub(t.checked) >= t.recheck {
			t.checked = now
			if info, err := os.Stat(t.path); err == nil && !sameFileVersion(info, t.info) {
				_ = t.read(info) // unreadable: keep the last token; the next look tries again
			}
		}
	}
	return t.token
}

// readNow reads the file afresh, whenever it was last looked at and
// whatever its stat says, for the calls whose token the agent keeps: a
// registration (the agent syncs the service to the catalog with it) and
// the deregistration at shutdown (the last call, which a token rotated
// since the last look must not miss). A file that cannot be read, or is
// empty, keeps the token last read.
func (t *consulToken) readNow() {
	if t.path == "" {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.checked = t.now()
	if info, err := os.Stat(t.path); err == nil {
		_ = t.read(info)
	}
}

// reload is called when Consul refused sent (403): it reads the file again
// at once, whatever it looks like, and reports whether the token to send
// now differs from sent (another request may have reloaded it already).
// A read that fails is returned; the token stays as it was.
func (t *consulToken) reload(sent string) (changed bool, err error) {
	if t.path == "" {
		return false, nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.token != sent {
		return true, nil
	}
	t.checked = t.now()
	info, err := os.Stat(t.path)
	if err == nil {
		err = t.read(info)
	}
	if err != nil {
		return false, fmt.Errorf("reading consul token file %s again: %w", t.path, err)
	}
	return t.token != sent, nil
}

// read takes the token in the file whose stat is info. t.mu is held (or t
// not shared yet).
func (t *consulToken) read(info os.FileInfo) error {
	data, err := os.ReadFile(t.path)
	if err != nil {
		return err
	}
	t.info = info
	tok := strings.TrimSpace(string(data))
	if tok == "" || tok == t.token {
		return nil
	}
	if t.token != "" {
		t.old = append(t.old, t.token)
		if len(t.old) > maxOldTokens {
			t.old = t.old[len(t.old)-maxOldTokens:]
		}
	}
	t.token = tok
	return nil
}

// sameFileVersion reports whether a and b are the same file, unchanged
// as far as a stat tells: a file renamed over the token file (Vault
// agent, Kubernetes' symlink swap) is another file; a file rewritten in
// place has another size or modification time.
func sameFileVersion(a, b os.FileInfo) bool {
	return b != nil && os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}

// scrub removes the current token and the ones sent before it from s.
func (t *consulToken) scrub(s string) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s = scrubToken(s, t.token)
	for _, old := range t.old {
		s = scrubToken(s, old)
	}
	return s
}
