package config

import (
	"net/url"
	"strings"
)

// ClusterConfig makes several agua nodes one shield (issue 16): bans,
// offender history, known-good addresses and lockdown are shared through
// Redis or Valkey (shield/redisstore). Empty Redis: this node alone, its
// state in <data_dir>/shield.
type ClusterConfig struct {
	Redis string `toml:"redis" doc:"Redis or Valkey URL shared by every node, e.g. \"redis://127.0.0.1:6379/0\" (rediss:// for TLS, redis://user:password@host:port/db). Empty: no cluster, the shield state stays on this node. Decisions never wait on Redis: when it is unreachable every node keeps enforcing what it knows and catches up when it returns."`
	Node  string `toml:"node" doc:"This node's name in the cluster (heartbeats, agua status). Empty: the host name."`
}

func (c ClusterConfig) validate() []Problem {
	var ps []Problem
	if c.Redis != "" {
		u, err := url.Parse(c.Redis)
		if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss" && u.Scheme != "unix") || (u.Scheme != "unix" && u.Host == "") {
			ps = append(ps, Problem{Key: "cluster.redis", Msg: "must be a redis://host:port/db, rediss:// or unix:// URL"})
		}
	}
	if strings.ContainsAny(c.Node, " \t\r\n") || len(c.Node) > 255 {
		ps = append(ps, Problem{Key: "cluster.node", Msg: "must be a name without spaces, at most 255 bytes"})
	}
	return ps
}
