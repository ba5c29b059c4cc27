// A third-party check of Licet's witness, built on golang.org/x/mod/sumdb (Debian's
// golang-golang-x-mod-dev): the signed-note layer and RFC 6962 tree of Go's checksum database.
//
//	witness_interop verify LOG_VKEY WITNESS_VKEY NOTE_FILE
//	    opens the note with note.Open, trusting the log's key and the witness's cosignature key;
//	    prints the names of the keys whose signatures verified, exits 1 if it does not open.
//	witness_interop grow ORIGIN OLD_SIZE NEW_SIZE
//	    makes a log key, builds a tree of the leaves "leaf 0", "leaf 1", ... with sumdb/tlog and
//	    prints JSON: the log's vkey, its checkpoints at both sizes and the consistency proof.
package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// cosignatureVerifier checks c2sp.org/tlog-cosignature cosignature/v1 lines (key type 0x04),
// which x/mod's note package does not know: it gives them to this Verifier by name and key hash.
type cosignatureVerifier struct {
	name string
	hash uint32
	key  ed25519.PublicKey
}

func (v cosignatureVerifier) Name() string    { return v.name }
func (v cosignatureVerifier) KeyHash() uint32 { return v.hash }
func (v cosignatureVerifier) Verify(msg, sig []byte) bool {
	if len(sig) != 8+ed25519.SignatureSize {
		return false
	}
	timestamp := binary.BigEndian.Uint64(sig[:8])
	signed := append([]byte(fmt.Sprintf("cosignature/v1\ntime %d\n", timestamp)), msg...)
	return ed25519.Verify(v.key, signed, sig[8:])
}

func newCosignatureVerifier(vkey string) (note.Verifier, error) {
	parts := strings.SplitN(vkey, "+", 3)
	if len(parts) != 3 {
		return nil, fmt.Errorf("witness vkey: want name+hash+key")
	}
	raw, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil || len(raw) != 1+ed25519.PublicKeySize || raw[0] != 0x04 {
		return nil, fmt.Errorf("witness vkey: want base64(0x04 || 32-byte key)")
	}
	digest := sha256.Sum256(append([]byte(parts[0]+"\n"), raw...))
	if hex.EncodeToString(digest[:4]) != parts[1] {
		return nil, fmt.Errorf("witness vkey: key hash %s is not SHA-256(name || 0x0A || 0x04 || key)[:4]", parts[1])
	}
	return cosignatureVerifier{parts[0], binary.BigEndian.Uint32(digest[:4]), raw[1:]}, nil
}

func verify(logVkey, witnessVkey, path string) error {
	logVerifier, err := note.NewVerifier(logVkey)
	if err != nil {
		return err
	}
	witness, err := newCosignatureVerifier(witnessVkey)
	if err != nil {
		return err
	}
	msg, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	opened, err := note.Open(msg, note.VerifierList(logVerifier, witness))
	if err != nil {
		return err
	}
	for _, sig := range opened.Sigs {
		fmt.Println(sig.Name)
	}
	return nil
}

func grow(origin string, oldSize, newSize int64) error {
	skey, vkey, err := note.GenerateKey(rand.Reader, origin)
	if err != nil {
		return err
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		return err
	}
	var stored []tlog.Hash
	reader := tlog.HashReaderFunc(func(indexes []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(indexes))
		for i, index := range indexes {
			out[i] = stored[index]
		}
		return out, nil
	})
	for i := int64(0); i < newSize; i++ {
		hashes, err := tlog.StoredHashes(i, []byte(fmt.Sprintf("leaf %d", i)), reader)
		if err != nil {
			return err
		}
		stored = append(stored, hashes...)
	}
	checkpoint := func(size int64) (string, error) {
		root, err := tlog.TreeHash(size, reader)
		if err != nil {
			return "", err
		}
		text := fmt.Sprintf("%s\n%d\n%s\n", origin, size, base64.StdEncoding.EncodeToString(root[:]))
		signed, err := note.Sign(&note.Note{Text: text}, signer)
		return string(signed), err
	}
	oldNote, err := checkpoint(oldSize)
	if err != nil {
		return err
	}
	newNote, err := checkpoint(newSize)
	if err != nil {
		return err
	}
	proof, err := tlog.ProveTree(newSize, oldSize, reader)
	if err != nil {
		return err
	}
	lines := []string{}
	for _, h := range proof {
		lines = append(lines, base64.StdEncoding.EncodeToString(h[:]))
	}
	var out bytes.Buffer
	err = json.NewEncoder(&out).Encode(map[string]any{"vkey": vkey, "old": oldNote, "new": newNote, "proof": lines})
	os.Stdout.Write(out.Bytes())
	return err
}

func main() {
	var err error
	switch {
	case len(os.Args) == 5 && os.Args[1] == "verify":
		err = verify(os.Args[2], os.Args[3], os.Args[4])
	case len(os.Args) == 5 && os.Args[1] == "grow":
		oldSize, err1 := strconv.ParseInt(os.Args[3], 10, 64)
		newSize, err2 := strconv.ParseInt(os.Args[4], 10, 64)
		if err1 != nil || err2 != nil {
			err = fmt.Errorf("sizes must be decimal")
		} else {
			err = grow(os.Args[2], oldSize, newSize)
		}
	default:
		err = fmt.Errorf("usage: witness_interop verify LOG_VKEY WITNESS_VKEY NOTE_FILE | grow ORIGIN OLD NEW")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
