package main

import (
	"fmt"
	"net/url"
	"text/tabwriter"
	"time"

	"github.com/agua-mail/agua/internal/admin"
	"github.com/agua-mail/agua/internal/server"
)

// userSending runs `agua user suspend|unsuspend ADDRESS` and `agua user
// suspended` through the running server's admin API: the server owns the
// sending limits, the queue that holds the account's mail and the sessions
// a suspension ends.
func userSending(e *env, pos []string, reason string) error {
	c := admin.NewClient(server.AdminSocket(e.cfg))
	var res server.SuspendResult
	switch pos[0] {
	case "suspend":
		if err := c.Do("POST", "/v1/suspensions", server.SuspendRequest{Account: pos[1], Reason: reason}, &res); err != nil {
			return err
		}
	case "unsuspend":
		if err := c.Do("DELETE", "/v1/suspensions/"+url.PathEscape(pos[1]), nil, &res); err != nil {
			return err
		}
	default:
		var l []server.SuspensionInfo
		if err := c.Do("GET", "/v1/suspensions", nil, &l); err != nil {
			return err
		}
		if len(l) == 0 {
			fmt.Fprintln(e.stdout, "no account's sending is suspended")
			return nil
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ACCOUNT\tSINCE\tBY\tHELD\tREASON")
		for _, s := range l {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", s.Account, s.Since.UTC().Format(time.DateTime), s.By, s.Held, s.Reason)
		}
		return tw.Flush()
	}
	fmt.Fprintln(e.stdout, res.Result)
	return nil
}
