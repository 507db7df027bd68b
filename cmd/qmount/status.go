package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/qmount/qmount/supervisor"
	"github.com/urfave/cli/v2"
)

func init() {
	commands = append(commands, &cli.Command{
		Name:  "status",
		Usage: "list mounts: mount point, disk, filesystem, guest, pids, state",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print a JSON list (stable field names)"},
		},
		Action: func(c *cli.Context) error {
			l, err := layout()
			if err != nil {
				return err
			}
			all, err := l.List()
			if err != nil {
				return err
			}
			for i, st := range all {
				all[i] = l.Status(c.Context, st)
			}
			if c.Bool("json") {
				if all == nil {
					all = []*supervisor.State{}
				}
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(all)
			}
			if len(all) == 0 {
				fmt.Println("no mounts")
				return nil
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "MOUNTPOINT\tDISK\tTYPE\tGUEST\tMODE\tPID\tVM PID\tSTATE\tSINCE")
			for _, st := range all {
				disk := strings.Join(st.Disks, ",")
				if st.Partition > 0 {
					disk += fmt.Sprintf("@%d", st.Partition)
				}
				mode := "rw"
				if st.ReadOnly {
					mode = "ro"
				}
				vm := "-"
				if st.VMPID > 0 {
					vm = fmt.Sprint(st.VMPID)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", st.Mountpoint, disk, st.FSType, st.Guest,
					mode, st.SupervisorPID, vm, st.State, st.Since.Local().Format(time.DateTime))
			}
			return tw.Flush()
		},
	})
}
