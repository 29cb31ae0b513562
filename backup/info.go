package backup

import (
	"encoding/json"
	"fmt"
	"time"
)

// Info is one stanza of `pgbackrest info --output=json`, the parts raftgres
// shows.
type Info struct {
	Name    string
	Status  string // pgBackRest's status message ("ok", "no valid backups", ...)
	Code    int
	Backups []Backup
	// WALMin and WALMax are the oldest and newest archived WAL segment of
	// the current database (empty when none).
	WALMin, WALMax string
}

// Backup is one backup in the repository.
type Backup struct {
	Label      string    `json:"label"`
	Type       string    `json:"type"`
	Start      time.Time `json:"start"`
	Stop       time.Time `json:"stop"`
	StartLSN   string    `json:"start_lsn"`
	StopLSN    string    `json:"stop_lsn"`
	Size       int64     `json:"size"`
	RepoSize   int64     `json:"repo_size"`
	Prior      string    `json:"prior,omitempty"`
	Error      bool      `json:"error,omitempty"`
	WALStart   string    `json:"wal_start"`
	WALStop    string    `json:"wal_stop"`
	DatabaseID int       `json:"-"`
}

type rawInfo struct {
	Name   string `json:"name"`
	Status struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"status"`
	Archive []struct {
		Database struct {
			ID int `json:"id"`
		} `json:"database"`
		Min *string `json:"min"`
		Max *string `json:"max"`
	} `json:"archive"`
	DB []struct {
		ID int `json:"id"`
	} `json:"db"`
	Backup []struct {
		Label   string `json:"label"`
		Type    string `json:"type"`
		Error   *bool  `json:"error"`
		Prior   *string
		Archive struct {
			Start *string `json:"start"`
			Stop  *string `json:"stop"`
		} `json:"archive"`
		Database struct {
			ID int `json:"id"`
		} `json:"database"`
		Info struct {
			Size       int64 `json:"size"`
			Repository struct {
				Size int64 `json:"size"`
			} `json:"repository"`
		} `json:"info"`
		LSN struct {
			Start string `json:"start"`
			Stop  string `json:"stop"`
		} `json:"lsn"`
		Timestamp struct {
			Start int64 `json:"start"`
			Stop  int64 `json:"stop"`
		} `json:"timestamp"`
	} `json:"backup"`
}

// maxInfo bounds the JSON ParseInfo reads (a repository with thousands of
// backups is well under it).
const maxInfo = 16 << 20

// ParseInfo decodes `pgbackrest info --output=json`. The bytes come from
// an external program reading a repository that may be shared: anything
// malformed is an error, never a panic.
func ParseInfo(b []byte) ([]Info, error) {
	if len(b) > maxInfo {
		return nil, fmt.Errorf("pgbackrest info: %d bytes of JSON, over %d", len(b), maxInfo)
	}
	var raw []rawInfo
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("pgbackrest info: decode: %w", err)
	}
	out := make([]Info, 0, len(raw))
	for _, r := range raw {
		if r.Name == "" {
			return nil, fmt.Errorf("pgbackrest info: a stanza without a name")
		}
		in := Info{Name: r.Name, Status: r.Status.Message, Code: r.Status.Code}
		current := 0
		for _, d := range r.DB {
			current = max(current, d.ID)
		}
		for _, a := range r.Archive {
			if a.Database.ID == current && a.Min != nil && a.Max != nil {
				in.WALMin, in.WALMax = *a.Min, *a.Max
			}
		}
		for _, rb := range r.Backup {
			bk := Backup{Label: rb.Label, Type: rb.Type, StartLSN: rb.LSN.Start, StopLSN: rb.LSN.Stop,
				Size: rb.Info.Size, RepoSize: rb.Info.Repository.Size, DatabaseID: rb.Database.ID,
				Start: time.Unix(rb.Timestamp.Start, 0).UTC(), Stop: time.Unix(rb.Timestamp.Stop, 0).UTC()}
			if rb.Label == "" {
				return nil, fmt.Errorf("pgbackrest info: stanza %s: a backup without a label", r.Name)
			}
			if rb.Error != nil {
				bk.Error = *rb.Error
			}
			if rb.Prior != nil {
				bk.Prior = *rb.Prior
			}
			if rb.Archive.Start != nil {
				bk.WALStart = *rb.Archive.Start
			}
			if rb.Archive.Stop != nil {
				bk.WALStop = *rb.Archive.Stop
			}
			in.Backups = append(in.Backups, bk)
		}
		out = append(out, in)
	}
	return out, nil
}
