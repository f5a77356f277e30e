package server

import (
	"os"

	"github.com/agua-mail/agua/internal/metrics"
	"github.com/agua-mail/agua/shield"
	"github.com/agua-mail/agua/shield/redisstore"
)

// ClusterStatus is the cluster part of `agua status`: connected to Redis
// or not (since when), the nodes seen with their last heartbeat, writes
// waiting for Redis.
type ClusterStatus = redisstore.Status

// openCluster sets opts.Store to the shared shield state when [cluster]
// redis is set (issue 16). An unreachable Redis is not an error: the node
// starts on its own state and catches up when Redis answers. The server
// closes the store after the shield.
func (s *Server) openCluster(opts *shield.Options) error {
	c := s.cfg.Cluster
	if c.Redis == "" {
		return nil
	}
	node := c.Node
	if node == "" {
		node, _ = os.Hostname()
	}
	st, err := redisstore.Open(redisstore.Options{URL: c.Redis, Node: node, Capacity: s.cfg.Shield.TableSize,
		Logger: s.log.With("component", "cluster")})
	if err != nil {
		return err
	}
	s.cluster, opts.Store, opts.Node = st, st, node
	return nil
}

// clusterStatus is nil without a cluster.
func (s *Server) clusterStatus() *ClusterStatus {
	if s.cluster == nil {
		return nil
	}
	st := s.cluster.Status()
	return &st
}

// clusterFigures are the cluster's metrics.
func (s *Server) clusterFigures() metrics.ClusterFigures {
	st := s.cluster.Status()
	f := metrics.ClusterFigures{Connected: st.Connected, SharedBans: st.Bans, Pending: st.Pending, Lost: st.Lost}
	for _, n := range st.Nodes {
		if n.Alive {
			f.Alive++
		} else {
			f.Stale++
		}
	}
	return f
}
