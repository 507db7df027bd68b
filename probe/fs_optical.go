package probe

import "fmt"

const isoSector = 2048

// mergeUTF16BEASCII is blkid's merge_utf16be_ascii: when the Joliet (UTF-16)
// identifier is a prefix of the ASCII one, rebuild the full identifier.
func mergeUTF16BEASCII(utf16, ascii []byte) []byte {
	n := len(ascii)
	if len(utf16) < n {
		return nil
	}
	out := make([]byte, 4*n+8)
	toUpper := func(c byte) byte {
		if c >= 'a' && c <= 'z' {
			return c - 32
		}
		return c
	}
	o, a, u := 0, 0, 0
	for ; u+1 < n && a < n; o, a, u = o+2, a+1, u+2 {
		if utf16[u] >= 0xD8 && utf16[u] <= 0xDB && u+3 < n && utf16[u+2] >= 0xDC && utf16[u+2] <= 0xDF {
			out[o], out[o+1] = utf16[u], utf16[u+1]
			o, u = o+2, u+2
		}
		switch {
		case ascii[a] == '_':
			out[o], out[o+1] = utf16[u], utf16[u+1]
		case utf16[u] == 0 && utf16[u+1] == '_':
			out[o], out[o+1] = 0, ascii[a]
		case utf16[u] == 0 && toUpper(ascii[a]) == toUpper(utf16[u+1]):
			out[o] = 0
			if ascii[a] >= 'A' && ascii[a] <= 'Z' {
				out[o+1] = utf16[u+1]
			} else {
				out[o+1] = ascii[a]
			}
		default:
			return nil
		}
	}
	for ; a < n; o, a = o+2, a+1 {
		out[o], out[o+1] = 0, ascii[a]
	}
	return out[:o]
}

// isoDateUUID is blkid's UUID for ISO 9660: the volume date as text. It
// returns ok=false when the date is unset (all '0' and zero offset).
func isoDateUUID(d []byte) (uuid string, set bool) {
	b := d[:16]
	zeros := 0
	for _, c := range b {
		if c == '0' {
			zeros++
		}
	}
	if zeros == 16 && d[16] == 0 {
		return "", false
	}
	if allZero(b) {
		return "", true
	}
	return validUTF8([]byte(fmt.Sprintf("%s-%s-%s-%s-%s-%s-%s", b[0:4], b[4:6], b[6:8], b[8:10], b[10:12], b[12:14], b[14:16]))), true
}

// probeISO9660 identifies ISO 9660 (with Joliet) and High Sierra.
func probeISO9660(g region) (*Content, error) {
	first, err := g.read(0x8000, isoSector)
	if err != nil {
		return nil, err
	}
	if hasMagic(first, 9, "CDROM") && !hasMagic(first, 1, "CD001") {
		return &Content{Type: "iso9660", Version: "High Sierra", BlockSize: isoSector, Label: label(first[48:80])}, nil
	}
	if !hasMagic(first, 1, "CD001") {
		return nil, nil
	}
	var pvd, joliet []byte
	for i := 0; i < 16 && (pvd == nil || joliet == nil); i++ {
		d := first
		if i > 0 {
			d, err = g.read(0x8000+int64(i)*isoSector, isoSector)
			if err != nil {
				break
			}
		}
		if d[0] == 0xff {
			break
		}
		switch {
		case pvd == nil && d[0] == 1:
			pvd = d
		case joliet == nil && d[0] == 2:
			if esc := string(d[88:91]); esc == "%/@" || esc == "%/C" || esc == "%/E" {
				joliet = d
			}
		}
	}
	if pvd == nil {
		return nil, nil
	}
	c := &Content{Type: "iso9660", BlockSize: isoSector}
	if u, set := isoDateUUID(pvd[830:847]); set {
		c.UUID = u
	} else if u, set := isoDateUUID(pvd[813:830]); set {
		c.UUID = u
	}
	if joliet != nil {
		c.Version = "Joliet Extension"
		if m := mergeUTF16BEASCII(joliet[40:72], pvd[40:72]); len(m) != 0 {
			c.Label = utf8Label(encUTF16BE, m)
		} else {
			c.Label = utf8Label(encUTF16BE, joliet[40:72])
		}
	} else {
		c.Label = label(pvd[40:72])
	}
	c.Size = clampSize(uint64(le32(pvd, 80)), uint64(le16(pvd, 128)))
	return c, nil
}

// udfCharsetOK reports whether a charspec is "OSTA Compressed Unicode".
func udfCharsetOK(cs []byte) bool {
	const osta = "OSTA Compressed Unicode"
	return cs[0] == 0 && string(cs[1:1+len(osta)]) == osta && cs[1+len(osta)] == 0
}

// udfDString decodes an OSTA dstring (cid, chars, length byte).
func udfDString(d []byte) (enc int, s []byte, ok bool) {
	clen := int(d[len(d)-1])
	if clen > 0 {
		clen--
	}
	if clen > len(d)-2 {
		clen = len(d) - 2
	}
	switch d[0] {
	case 8:
		enc = encLatin1
	case 16:
		enc = encUTF16BE
	default:
		return 0, nil, false
	}
	return enc, d[1 : 1+clen], true
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

func lower(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 32
	}
	return c
}

// udfUUID is blkid's gen_uuid_from_volset_id.
func udfUUID(volset []byte) (string, bool) {
	enc, s, ok := udfDString(volset)
	if !ok {
		return "", false
	}
	// ul_encode_to_utf8 into a 17-byte buffer: at most 16 bytes, whole
	// characters only.
	var buf [17]byte
	j := 0
	for _, r := range decode(enc, s) {
		e := []byte(string(r))
		if j+len(e) >= 17 {
			break
		}
		copy(buf[j:], e)
		j += len(e)
	}
	if j < 8 {
		return "", false
	}
	nonhex := 16
	for i := 0; i < 16; i++ {
		if !isHex(buf[i]) {
			nonhex = i
			break
		}
	}
	var u []byte
	switch {
	case nonhex < 8:
		u = []byte(fmt.Sprintf("%x", buf[0:8]))
	case nonhex < 16:
		for i := 0; i < 8; i++ {
			u = append(u, lower(buf[i]))
		}
		u = append(u, fmt.Sprintf("%x", buf[8:12])...)
	default:
		for i := 0; i < 16; i++ {
			u = append(u, lower(buf[i]))
		}
	}
	return string(rtrim(u)), true
}

// probeUDF identifies UDF, trying the block sizes blkid tries.
func probeUDF(g region) (*Content, error) {
	first, err := g.read(0x8000, 7)
	if err != nil {
		return nil, err
	}
	known := func(id string) bool {
		switch id {
		case "BEA01", "BOOT2", "CD001", "CDW02", "NSR02", "NSR03", "TEA01":
			return true
		}
		return false
	}
	if !known(string(first[1:6])) {
		return nil, nil
	}
	var bs int64
	var vd []byte
	vsd2048 := -1
	for _, pbs := range []int64{512, 1024, 2048, 4096} {
		vsdLen := pbs
		if vsdLen < 2048 {
			vsdLen = 2048
		}
		nsr := false
		if vsdLen == 2048 && vsd2048 >= 0 {
			if vsd2048 == 0 {
				continue
			}
			nsr = true
		} else {
			for b := int64(0); b < 64; b++ {
				v, err := g.read(0x8000+b*vsdLen, 7)
				if err != nil {
					break
				}
				id := string(v[1:6])
				if v[1] == 0 {
					break
				}
				if id == "NSR02" || id == "NSR03" {
					nsr = true
					break
				}
				if !known(id) {
					break
				}
			}
			if vsdLen == 2048 {
				vsd2048 = 0
				if nsr {
					vsd2048 = 1
				}
			}
		}
		if !nsr {
			continue
		}
		for _, sec := range []int64{256, 512} {
			d, err := g.read(sec*pbs, 512)
			if err != nil {
				continue
			}
			if int64(le32(d, 12)) == sec && le16(d, 0) == 2 {
				bs, vd = pbs, d
				break
			}
		}
		if vd != nil {
			break
		}
	}
	if vd == nil {
		return nil, nil
	}
	c := &Content{Type: "udf", BlockSize: bs}
	count := le32(vd, 16) / uint32(bs)
	loc := le32(vd, 20)
	if count > 1024 {
		count = 1024
	}
	var udfRev uint16
	var lvidLen, lvidLoc uint32
	haveLabel, haveUUID := false, false
	for b := uint32(0); b < count; b++ {
		d, err := g.read(int64(loc+b)*bs, 512)
		if err != nil {
			break
		}
		typ := le16(d, 0)
		if typ == 0 || le32(d, 12) != loc+b || typ == 8 {
			break
		}
		switch typ {
		case 1: // primary volume descriptor
			if !haveUUID && udfCharsetOK(d[200:264]) {
				if u, ok := udfUUID(d[72:200]); ok && u != "" {
					c.UUID, haveUUID = u, true
				}
			}
		case 6: // logical volume descriptor
			if lvidLen == 0 || lvidLoc == 0 {
				if le32(d, 268) != 0 {
					lvidLen, lvidLoc = le32(d, 432), le32(d, 436)
				}
			}
			if udfRev == 0 && string(d[217:236]) == "*OSTA UDF Compliant" && d[236] == 0 {
				udfRev = le16(d, 240)
			}
			if !haveLabel && udfCharsetOK(d[20:84]) {
				if enc, s, ok := udfDString(d[84:212]); ok {
					if l := utf8Label(enc, s); l != "" {
						c.Label, haveLabel = l, true
					}
				}
			}
		}
	}
	if lvidLoc != 0 && lvidLen >= 440 {
		d, err := g.read(int64(lvidLoc)*bs, 512)
		if err == nil && le16(d, 0) == 9 && le32(d, 12) == lvidLoc && le32(d, 76) >= 46 {
			iuOff := int64(lvidLoc)*bs + 80 + 8*int64(le32(d, 72))
			if iu, err := g.read(iuOff, 46); err == nil {
				if r := le16(iu, 40); r != 0 && udfRev < r {
					udfRev = r
				}
				if r := le16(iu, 42); r != 0 && udfRev < r {
					udfRev = r
				}
			}
		}
	}
	if udfRev != 0 {
		c.Version = fmt.Sprintf("%x.%02x", udfRev>>8, udfRev&0xff)
	}
	return c, nil
}
