package pgmanager

import "testing"

func TestSegmentStart(t *testing.T) {
	for _, tc := range []struct {
		name string
		size uint64
		want uint64
		bad  bool
	}{
		{"0000000000000001", 16 << 20, 0x1000000, false},
		{"0000000100000003", 16 << 20, 0x103000000, false},
		{"00000000000000FF", 16 << 20, 0xFF000000, false},
		{"0000000000000002", 64 << 20, 0x8000000, false},
		{"000000000000001", 16 << 20, 0, true},
		{"00000000000000XY", 16 << 20, 0, true},
	} {
		got, err := segmentStart(tc.name, tc.size)
		if (err != nil) != tc.bad || got != tc.want {
			t.Errorf("segmentStart(%s, %d) = %X (%v), want %X (error %v)", tc.name, tc.size, got, err, tc.want, tc.bad)
		}
	}
}
