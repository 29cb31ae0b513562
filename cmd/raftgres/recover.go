package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"raftgres/raftstore"
)

func recoverCommand() *cli.Command {
	return &cli.Command{
		Name:  "recover",
		Usage: "rewrite this host's Raft store to the surviving members after a majority is lost for good (offline)",
		Description: "Disaster recovery of the Raft store, for when a majority of the members is gone for good\n" +
			"(their hosts or disks are lost) and the cluster cannot elect a Raft leader. Run it on each\n" +
			"surviving host with its agent stopped, with the same --survivors everywhere, then start the\n" +
			"agents. It:\n" +
			"  - makes the survivors the only Raft voters (hashicorp/raft RecoverCluster; every entry\n" +
			"    in this host's Raft log counts as committed),\n" +
			"  - removes the other members from the member list,\n" +
			"  - clears the leader key: the survivors' agents start PostgreSQL read-only and the first\n" +
			"    election, which waits for every survivor's report (at most 2·ttl), promotes the most\n" +
			"    advanced one; a member whose system identifier differs is never promoted.\n" +
			"It refuses while the agent runs (the store is locked) and while a majority of the current\n" +
			"Raft configuration answers on its Raft address, and says what it will do before doing it.\n" +
			"New hosts then join the recovered cluster with raft.join as usual.",
		Flags: []cli.Flag{configFlag(true),
			&cli.StringFlag{Name: "survivors", Usage: "comma-separated `MEMBERS` that make the new configuration " +
				"(default: this member alone); give the same list on every survivor"},
			forceFlag(),
		},
		Action: func(c *cli.Context) error {
			if os.Geteuid() == 0 {
				return cli.Exit("recover must not run as root: the Raft files belong to the agent's user; "+
					"run it as that user, e.g. sudo -u postgres raftgres recover -c "+c.String("config"), 2)
			}
			cfg, err := loadConfig(c.String("config"))
			if err != nil {
				return cli.Exit(err.Error(), 2)
			}
			var survivors []string
			if s := strings.TrimSpace(c.String("survivors")); s != "" {
				for _, name := range strings.Split(s, ",") {
					if name = strings.TrimSpace(name); name != "" {
						survivors = append(survivors, name)
					}
				}
			}
			plan, err := raftstore.PlanRecovery(cfg.Raft, survivors, time.Second)
			if err != nil {
				if plan != nil {
					fmt.Fprint(c.App.Writer, plan)
				}
				return cli.Exit("recover: "+err.Error()+"; nothing was changed", 1)
			}
			fmt.Fprint(c.App.Writer, plan)
			if err := confirm(c, "Rewrite this member's Raft store as above (nothing changed so far)?"); err != nil {
				return err
			}
			if err := plan.Recover(time.Now().UTC(), "recover:"+cfg.Name); err != nil {
				return cli.Exit("recover: "+err.Error(), 1)
			}
			fmt.Fprintf(c.App.Writer, "recovered %s; start the agent: raftgres agent -c %s\n", cfg.Raft.Dir, c.String("config"))
			return nil
		},
	}
}
