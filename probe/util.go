package probe

import (
	"bytes"
	"fmt"
	"hash/crc32"
	"strings"
	"unicode/utf8"
)

// isSpace matches C's isspace in the "C" locale, which blkid uses to trim.
func isSpace(c byte) bool {
	return c == ' ' || (c >= '\t' && c <= '\r')
}

// cstr returns b up to its first NUL byte.
func cstr(b []byte) []byte {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		return b[:i]
	}
	return b
}

// rtrim removes trailing C whitespace.
func rtrim(b []byte) []byte {
	for len(b) > 0 && isSpace(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return b
}

// ltrim removes leading C whitespace.
func ltrim(b []byte) []byte {
	for len(b) > 0 && isSpace(b[0]) {
		b = b[1:]
	}
	return b
}

// validUTF8 makes s valid UTF-8 (raw 8-bit labels become U+FFFD where invalid).
func validUTF8(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	return strings.ToValidUTF8(string(b), "\uFFFD")
}

// label is blkid_probe_set_label: a NUL-terminated byte string, right-trimmed.
func label(b []byte) string {
	return validUTF8(rtrim(cstr(b)))
}

// idLabel is blkid_probe_set_id_label: trimmed on both sides.
func idLabel(b []byte) string {
	return validUTF8(ltrim(rtrim(cstr(b))))
}

// Text encodings for decode.
const (
	encUTF16LE = iota
	encUTF16BE
	encLatin1
)

// decode is ul_encode_to_utf8: converts until the first NUL character,
// combining surrogate pairs; unpaired surrogates become U+FFFD.
func decode(enc int, src []byte) string {
	var sb strings.Builder
	for i := 0; i < len(src); i++ {
		var c rune
		switch enc {
		case encUTF16LE, encUTF16BE:
			if i+2 > len(src) {
				return sb.String()
			}
			if enc == encUTF16LE {
				c = rune(src[i+1])<<8 | rune(src[i])
			} else {
				c = rune(src[i])<<8 | rune(src[i+1])
			}
			i++
			if c >= 0xD800 && c <= 0xDBFF && i+2 < len(src) {
				var c2 rune
				if enc == encUTF16LE {
					c2 = rune(src[i+2])<<8 | rune(src[i+1])
				} else {
					c2 = rune(src[i+1])<<8 | rune(src[i+2])
				}
				if c2 >= 0xDC00 && c2 <= 0xDFFF {
					c = 0x10000 + (c-0xD800)<<10 + (c2 - 0xDC00)
					i += 2
				}
			}
		case encLatin1:
			c = rune(src[i])
		default:
			return ""
		}
		if c == 0 {
			break
		}
		sb.WriteRune(c) // WriteRune maps surrogates to U+FFFD
	}
	return sb.String()
}

// utf8Label is blkid_probe_set_utf8label: decoded, then right-trimmed.
func utf8Label(enc int, src []byte) string {
	return string(rtrim([]byte(decode(enc, src))))
}

// utf8IDLabel is blkid_probe_set_utf8_id_label: decoded, trimmed both sides.
func utf8IDLabel(enc int, src []byte) string {
	return string(ltrim(rtrim([]byte(decode(enc, src)))))
}

// allZero reports whether b holds only zero bytes.
func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// uuidString formats 16 bytes as a DCE UUID the way blkid does (lowercase,
// byte order as stored). An all-zero UUID gives "", as blkid prints none.
func uuidString(b []byte) string {
	if len(b) != 16 || allZero(b) {
		return ""
	}
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// guidString formats a mixed-endian GUID as stored by GPT and Microsoft
// (first three fields little endian), lowercase.
func guidString(b []byte) string {
	if len(b) != 16 {
		return ""
	}
	return fmt.Sprintf("%08x-%04x-%04x-%x-%x", le32(b, 0), le16(b, 4), le16(b, 6), b[8:10], b[10:16])
}

// crc32IEEE computes the usual CRC-32 (as GPT uses).
func crc32IEEE(b []byte) uint32 { return crc32.ChecksumIEEE(b) }

// ulCRC32 is util-linux's ul_crc32: the IEEE table without the pre and post
// inversion, seeded by the caller.
func ulCRC32(seed uint32, b []byte) uint32 {
	return ^crc32.Update(^seed, crc32.IEEETable, b)
}

// isPow2 reports whether v is a power of two (0 is not).
func isPow2(v uint64) bool { return v != 0 && v&(v-1) == 0 }
