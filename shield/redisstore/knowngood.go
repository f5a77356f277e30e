package redisstore

import (
	"context"
	"encoding/hex"
	"errors"
	"net/netip"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/agua-mail/agua/shield"
)

// Known-good addresses are kg:<addr> keys indexed twice: kgs by expiry
// (pruning, the cap, Load) and kgx by address, so that revoking a network
// reads only the members inside it (ZRANGEBYLEX) instead of the whole
// index. A kgx member is "4" and the 8 hex digits of an IPv4 address, or
// "6" and the 32 of an IPv6 one, then "|" and the address as kgs and the
// key name spell it: every member has the same score (0), so Redis sorts
// them by these bytes, which is the order of the addresses, the two
// families apart. An IPv4-mapped IPv6 address is stored as its IPv4 form
// and a prefix inside ::ffff:0:0/96 revokes as its IPv4 form, so both
// spellings meet.
//
// Migration: a Redis written by a version without kgx has kgs and the
// keys only. Every known-good script first builds kgx from kgs when kgx
// does not exist and kgs is not empty (one ZRANGE of at most Capacity
// members, once); scripts run one at a time, so nodes racing to do it
// build it once. Deleting kgx by hand rebuilds it the same way.
//
// Rolling upgrade: once kgx exists, a node of the previous version still
// writes kgs and the keys only: its marks do not reach kgx, and its
// pruning, cap and revocations (a walk of kgs) leave kgx members behind.
// So while both versions run:
//   - a new node's network revocation misses an address only an old node
//     marked. Every running node still forgets it (the revocation is
//     published as before) and the ban that caused it refuses it while it
//     lasts; what stays is its record in Redis, which a node that loads
//     the state (a restart, a resync) takes as known-good until it expires
//     (at most the known-good TTL). A new node's mark of an address indexes
//     it, and single-address revocations are exact (the key by name).
//   - a kgx member whose address an old node dropped stays until a
//     revocation of its network removes it (one useless DEL) or the
//     address is marked and dropped again.
//
// We accept that for the length of an upgrade: the alternative, every
// write checking the two indexes against each other, costs every node
// forever. `DEL <prefix>kgx` once the upgrade is done rebuilds an exact
// index on the next known-good write.

// kgLib is the Lua the known-good scripts share: the kgx member of an
// address as kgs spells it (nil for anything Go's netip.Addr.String does
// not print), and the index maintenance.
const kgLib = `
local function hexaddr(a)
  a = (string.gsub(a, '%%.*$', ''))
  local o = {string.match(a, '^(%d+)%.(%d+)%.(%d+)%.(%d+)$')}
  if #o == 4 then
    local out = '4'
    for i = 1, 4 do
      local n = tonumber(o[i])
      if n > 255 then return nil end
      out = out .. string.format('%02x', n)
    end
    return out
  end
  local head, tail = a, nil
  local s, e = string.find(a, '::', 1, true)
  if s then head, tail = string.sub(a, 1, s - 1), string.sub(a, e + 1) end
  local function groups(part)
    local out = {}
    if part == '' then return out end
    for g in string.gmatch(part .. ':', '([^:]*):') do
      if not string.match(g, '^%x%x?%x?%x?$') then return nil end
      out[#out + 1] = string.format('%04x', tonumber(g, 16))
    end
    return out
  end
  local h, t = groups(head), {}
  if tail then t = groups(tail) end
  if not h or not t then return nil end
  local fill = 8 - #h - #t
  if fill < 0 or (tail and fill == 0) or (not tail and fill ~= 0) then return nil end
  return '6' .. table.concat(h) .. string.rep('0000', fill) .. table.concat(t)
end
local function member(a)
  local x = hexaddr(a)
  if x then return x .. '|' .. a end
  return nil
end
local batch = 500
local function unindex(kgx, addrs)
  local ms = {}
  for _, a in ipairs(addrs) do
    local m = member(a)
    if m then ms[#ms + 1] = m end
    if #ms == batch then redis.call('ZREM', kgx, unpack(ms)); ms = {} end
  end
  if #ms > 0 then redis.call('ZREM', kgx, unpack(ms)) end
end
local function ensureIndex(kgs, kgx)
  if redis.call('EXISTS', kgx) == 1 or redis.call('ZCARD', kgs) == 0 then return end
  local args = {}
  for _, a in ipairs(redis.call('ZRANGE', kgs, 0, -1)) do
    local m = member(a)
    if m then args[#args + 1] = 0; args[#args + 1] = m end
    if #args == 2 * batch then redis.call('ZADD', kgx, unpack(args)); args = {} end
  end
  if #args > 0 then redis.call('ZADD', kgx, unpack(args)) end
end
`

// putKnownGood is putCapped for known-good addresses: it also keeps kgx
// in step with kgs, so it learns which members it prunes (ZRANGEBYSCORE,
// O(pruned)) before removing them. Offenders keep putCapped.
var putKnownGood = redis.NewScript(kgLib + `
ensureIndex(KEYS[2], KEYS[3])
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[4])
if #expired > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[4])
  unindex(KEYS[3], expired)
end
redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
local m = member(ARGV[1])
if m then redis.call('ZADD', KEYS[3], 0, m) end
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[5])
if over > 0 then
  local gone = redis.call('ZPOPMIN', KEYS[2], over)
  local addrs = {}
  for i = 1, #gone, 2 do
    redis.call('DEL', ARGV[8] .. gone[i])
    addrs[#addrs + 1] = gone[i]
  end
  unindex(KEYS[3], addrs)
end
redis.call('PUBLISH', ARGV[6], ARGV[7])
return 1`)

// revokeKnownGood deletes the known-good addresses whose kgx members lie
// between ARGV[1] and ARGV[2] (ZRANGEBYLEX bounds), and publishes.
var revokeKnownGood = redis.NewScript(kgLib + `
ensureIndex(KEYS[1], KEYS[2])
local ms = redis.call('ZRANGEBYLEX', KEYS[2], ARGV[1], ARGV[2])
for i = 1, #ms, batch do
  local keys, addrs = {}, {}
  for j = i, math.min(i + batch - 1, #ms) do
    local at = string.find(ms[j], '|', 1, true)
    if at then
      local a = string.sub(ms[j], at + 1)
      keys[#keys + 1] = ARGV[3] .. a
      addrs[#addrs + 1] = a
    end
  end
  if #addrs > 0 then
    redis.call('DEL', unpack(keys))
    redis.call('ZREM', KEYS[1], unpack(addrs))
  end
end
if #ms > 0 then redis.call('ZREMRANGEBYLEX', KEYS[2], ARGV[1], ARGV[2]) end
redis.call('PUBLISH', ARGV[4], ARGV[5])
return #ms`)

// addrHex is the sortable part of an address's kgx member (the Lua
// hexaddr of its text).
func addrHex(a netip.Addr) string {
	if a.Is4() {
		b := a.As4()
		return "4" + hex.EncodeToString(b[:])
	}
	b := a.As16()
	return "6" + hex.EncodeToString(b[:])
}

// kgAddr is the spelling of a known-good address in keys and indexes.
func kgAddr(a netip.Addr) netip.Addr { return a.Unmap().WithZone("") }

// MarkKnownGood makes addr known-good until the given time.
func (s *Store) MarkKnownGood(ctx context.Context, addr netip.Addr, until time.Time) error {
	if !addr.IsValid() {
		return errors.New("shield redis store: invalid address")
	}
	addr = kgAddr(addr)
	now := s.opts.Now()
	if !now.Before(until) {
		return nil
	}
	member := addr.String()
	msg := s.encode(shield.Change{Kind: shield.ChangeKnownGood, Addr: addr, Until: until})
	return s.write(ctx, func(ctx context.Context) error {
		return putKnownGood.Run(ctx, s.rdb, []string{s.key("kg:", member), s.key("kgs", ""), s.key("kgx", "")},
			member, ms(until), ms(until), ms(now), s.opts.Capacity, s.channel(), msg, s.key("kg:", "")).Err()
	})
}

// RevokeKnownGood takes known-good status from every address in p: one
// key by name for a single address, else the addresses kgx holds between
// the first and the last address of p.
func (s *Store) RevokeKnownGood(ctx context.Context, p netip.Prefix) error {
	p = p.Masked()
	msg := s.encode(shield.Change{Kind: shield.ChangeRevokeKnownGood, Prefix: p})
	kp := shield.CanonPrefix(p)
	if kp.IsSingleIP() {
		a := kgAddr(kp.Addr()).String()
		return s.write(ctx, func(ctx context.Context) error {
			_, err := s.rdb.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
				pipe.Del(ctx, s.key("kg:", a))
				pipe.ZRem(ctx, s.key("kgs", ""), a)
				pipe.ZRem(ctx, s.key("kgx", ""), addrHex(kp.Addr())+"|"+a)
				pipe.Publish(ctx, s.channel(), msg)
				return nil
			})
			return err
		})
	}
	// "|" follows the hex digits of every member and "}" sorts after it,
	// so the bounds hold every member from the first address to the last.
	lo, hi := "["+addrHex(kp.Addr()), "["+addrHex(shield.LastAddr(kp))+"}"
	return s.write(ctx, func(ctx context.Context) error {
		return revokeKnownGood.Run(ctx, s.rdb, []string{s.key("kgs", ""), s.key("kgx", "")},
			lo, hi, s.key("kg:", ""), s.channel(), msg).Err()
	})
}

// KnownGood returns until when addr is known-good, if it is.
func (s *Store) KnownGood(ctx context.Context, addr netip.Addr) (time.Time, bool, error) {
	v, err := s.rdb.Get(ctx, s.key("kg:", kgAddr(addr).String())).Int64()
	if errors.Is(err, redis.Nil) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, err
	}
	until := time.UnixMilli(v).UTC()
	return until, s.opts.Now().Before(until), nil
}
