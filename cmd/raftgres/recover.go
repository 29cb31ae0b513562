package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"raftgres/config"
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
			"    advanced one; a member whose system identifier differs is never promoted,\n" +
			"  - in synchronous mode keeps the record of the synchronous primary and standbys as it\n" +
			"    is: only those hold every commit acknowledged to clients, so only a surviving one may\n" +
			"    be elected first, and the election waits for it (e.g. through PostgreSQL's crash\n" +
			"    recovery) rather than promote a less advanced survivor; if it cannot come back, stop\n" +
			"    the agents and recover again without it (and with --allow-data-loss),\n" +
			"  - records what it did in history (a raft_recover event).\n" +
			"It refuses while the agent runs (the store is locked), while a majority of the current\n" +
			"Raft configuration answers on its Raft address, and, in synchronous mode, when none of the\n" +
			"recorded synchronous members is among the survivors (acknowledged commits may be lost with\n" +
			"them) unless --allow-data-loss is given. It says what it will do before doing it.\n" +
			"New hosts then join the recovered cluster with raft.join as usual.",
		Flags: []cli.Flag{configFlag(true),
			&cli.StringFlag{Name: "survivors", Usage: "comma-separated `MEMBERS` that make the new configuration " +
				"(default: this member alone); give the same list on every survivor"},
			&cli.BoolFlag{Name: "allow-data-loss", Usage: "in synchronous mode, recover even when no recorded synchronous " +
				"member survives: the record is cleared and the most advanced survivor is elected, so commits " +
				"acknowledged to clients may be lost (recorded in history); give it on every survivor"},
			forceFlag(),
		},
		Action: func(c *cli.Context) error {
			if os.Geteuid() == 0 {
				return cli.Exit("recover must not run as root: the Raft files belong to the agent's user; "+
					"run it as that user, e.g. sudo -u postgres raftgres recover -c "+c.String("config"), 2)
			}
			cfg, err := config.Load(c.String("config"))
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
			plan, err := raftstore.PlanRecovery(cfg.Raft, survivors, time.Second, c.Bool("allow-data-loss"))
			if err != nil {
				if plan != nil {
					fmt.Fprint(c.App.Writer, plan)
				}
				return cli.Exit("recover: "+err.Error()+"; nothing was changed", 1)
			}
			fmt.Fprint(c.App.Writer, plan)
			question := "Rewrite this member's Raft store as above (nothing changed so far)?"
			if plan.SyncLost {
				question = "Rewrite this member's Raft store as above, accepting that commits acknowledged to clients may be lost (nothing changed so far)?"
			}
			if err := confirm(c, question); err != nil {
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
