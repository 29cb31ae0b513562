package api

import (
	"bytes"
	"math"
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
)

// serveMetrics serves reg's metrics in the format the scraper asks for,
// as promhttp does. In the text format, client_golang prints every value
// with strconv's shortest 'g' form, so an LSN of 83886296 reads
// 8.3886296e+07; Patroni prints integers, and scripts compare them with
// shell arithmetic, so the text is passed through plainNumbers. The
// protobuf format carries floats as floats and is served as it is.
func (s *Server) serveMetrics(reg prometheus.Gatherer) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mfs, err := reg.Gather()
		if err != nil {
			s.logger.Error("gather metrics", "error", err)
			http.Error(w, "gather metrics: "+err.Error(), http.StatusInternalServerError)
			return
		}
		format := expfmt.NegotiateAccept(r.Header, expfmt.DefaultAcceptedFormats()...)
		var buf bytes.Buffer
		enc := expfmt.NewEncoder(&buf, format)
		for _, mf := range mfs {
			if err := enc.Encode(mf); err != nil {
				s.logger.Error("encode metrics", "error", err)
				http.Error(w, "encode metrics: "+err.Error(), http.StatusInternalServerError)
				return
			}
		}
		body := buf.Bytes()
		if format.FormatType() == expfmt.TypeTextPlain {
			body = plainNumbers(body)
		}
		w.Header().Set("Content-Type", string(format))
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = w.Write(body)
	})
}

// plainNumbers rewrites, in Prometheus's text exposition, every sample
// value printed with an exponent (8.3886296e+07, 1.7000000125e+09) as a
// plain decimal (83886296, 1700000012.5) when its magnitude is at least
// 1e-4 and below 2^53, the range where float64 holds every integer
// exactly: integers print as integers, as Patroni prints them. Comments,
// names and labels (including a histogram's le) are left alone, and
// anything that does not parse as a sample line is copied unchanged.
func plainNumbers(text []byte) []byte {
	out := make([]byte, 0, len(text)+len(text)/16)
	for len(text) > 0 {
		line := text
		if i := bytes.IndexByte(text, '\n'); i >= 0 {
			line = text[:i+1]
		}
		text = text[len(line):]
		start, end, ok := sampleValue(line)
		if !ok {
			out = append(out, line...)
			continue
		}
		out = append(out, line[:start]...)
		out = appendPlain(out, line[start:end])
		out = append(out, line[end:]...)
	}
	return out
}

// sampleValue finds the value of a sample line (name, optional {labels},
// a space, the value, then an optional timestamp): its start and end.
func sampleValue(line []byte) (start, end int, ok bool) {
	if len(line) == 0 || line[0] == '#' || line[0] == '\n' {
		return 0, 0, false
	}
	i := 0
	for i < len(line) && line[i] != '{' && line[i] != ' ' {
		i++
	}
	if i < len(line) && line[i] == '{' {
		if i = labelsEnd(line, i); i < 0 {
			return 0, 0, false
		}
	}
	if i >= len(line) || line[i] != ' ' {
		return 0, 0, false
	}
	start = i + 1
	end = start
	for end < len(line) && line[end] != ' ' && line[end] != '\n' {
		end++
	}
	return start, end, end > start
}

// labelsEnd returns the index just after the '}' that closes the label
// set opening at line[open], or -1 if the line ends first.
func labelsEnd(line []byte, open int) int {
	inQuote := false
	for i := open + 1; i < len(line); i++ {
		switch c := line[i]; {
		case inQuote && c == '\\':
			i++ // the escaped character
		case c == '"':
			inQuote = !inQuote
		case !inQuote && c == '}':
			return i + 1
		}
	}
	return -1
}

// appendPlain appends value, rewritten without its exponent when
// plainNumbers says so.
func appendPlain(out, value []byte) []byte {
	if !bytes.ContainsAny(value, "eE") {
		return append(out, value...)
	}
	f, err := strconv.ParseFloat(string(value), 64)
	if a := math.Abs(f); err != nil || a < 1e-4 || a >= 1<<53 {
		return append(out, value...)
	}
	return strconv.AppendFloat(out, f, 'f', -1, 64)
}
