package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Centrifugo's client protocol, JSON flavour, as far as pm-loadgen needs it
// (github.com/centrifugal/protocol, client.proto, read in the source of
// Centrifugo v6.9.1): every WebSocket text frame holds one or more JSON
// objects separated by "\n". The client sends commands {"id":N,"connect":{…}};
// the server answers each with a reply of the same id, pushes publications
// as replies without an id ({"push":{"channel":…,"pub":{"data":…}}}), and
// pings with an empty object {}, which the client answers with {}.

// cfCommand is a client command: an id and one request.
type cfCommand struct {
	ID        uint32              `json:"id,omitempty"`
	Connect   *cfConnectRequest   `json:"connect,omitempty"`
	Subscribe *cfSubscribeRequest `json:"subscribe,omitempty"`
	Publish   *cfPublishRequest   `json:"publish,omitempty"`
}

type cfConnectRequest struct {
	Token string `json:"token"`
	Name  string `json:"name,omitempty"`
}

type cfSubscribeRequest struct {
	Channel string `json:"channel"`
}

type cfPublishRequest struct {
	Channel string  `json:"channel"`
	Data    cfStamp `json:"data"`
}

// cfReply is what the server sends: the reply to a command (ID > 0), or a push.
type cfReply struct {
	ID        uint32           `json:"id,omitempty"`
	Error     *cfError         `json:"error,omitempty"`
	Push      *cfPush          `json:"push,omitempty"`
	Connect   *cfConnectResult `json:"connect,omitempty"`
	Subscribe json.RawMessage  `json:"subscribe,omitempty"`
	Publish   json.RawMessage  `json:"publish,omitempty"`
}

type cfConnectResult struct {
	Client  string `json:"client"`
	Version string `json:"version,omitempty"`
	Ping    uint32 `json:"ping,omitempty"` // seconds between the server's pings
	Pong    bool   `json:"pong,omitempty"` // the server expects pongs
}

// cfPush is an asynchronous message: a publication, or the end of a
// subscription or connection.
type cfPush struct {
	Channel     string         `json:"channel,omitempty"`
	Pub         *cfPublication `json:"pub,omitempty"`
	Unsubscribe *cfCodeReason  `json:"unsubscribe,omitempty"`
	Disconnect  *cfCodeReason  `json:"disconnect,omitempty"`
}

type cfPublication struct {
	Data cfStamp `json:"data"`
}

type cfCodeReason struct {
	Code   uint32 `json:"code"`
	Reason string `json:"reason,omitempty"`
}

// cfError is an error reply.
type cfError struct {
	Code      uint32 `json:"code"`
	Message   string `json:"message"`
	Temporary bool   `json:"temporary,omitempty"`
}

func (e *cfError) Error() string { return fmt.Sprintf("error %d: %s", e.Code, e.Message) }

// cfStamp is what a writer publishes: its send time and writer, a sequence
// number per writer and channel (from 1) by which subscribers count losses,
// and the title and description a pm-loadgen write to pm changes, so that
// the payload carries what pm's does.
type cfStamp struct {
	Sent        int64  `json:"sent"` // unix nanoseconds
	Writer      int    `json:"writer"`
	Seq         uint64 `json:"seq"`
	Title       string `json:"title,omitempty"`
	Description string `json:"description,omitempty"`
}

// newCFStamp is the publication of a writer's seq-th write, sent at sent.
func newCFStamp(sent time.Time, writer int, seq uint64) cfStamp {
	return cfStamp{
		Sent: sent.UnixNano(), Writer: writer, Seq: seq,
		Title:       "pm-loadgen writer " + strconv.Itoa(writer) + ", write " + strconv.FormatUint(seq, 10),
		Description: stamp(sent, writer),
	}
}

// encodeCommand returns a command's frame.
func encodeCommand(c *cfCommand) ([]byte, error) {
	b, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("centrifugo: encode command: %w", err)
	}
	return b, nil
}

// cfPing is the server's ping, and the client's pong.
var cfPing = []byte("{}")

// decodeFrame calls f for each reply a frame holds, in order; ping is true
// for the server's empty ping, whose reply is then empty. It stops at the
// first object that is not a reply.
func decodeFrame(frame []byte, f func(r *cfReply, ping bool)) error {
	for len(frame) > 0 {
		line := frame
		if i := bytes.IndexByte(frame, '\n'); i >= 0 {
			line, frame = frame[:i], frame[i+1:]
		} else {
			frame = nil
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		if bytes.Equal(line, cfPing) {
			f(&cfReply{}, true)
			continue
		}
		var r cfReply
		if err := json.Unmarshal(line, &r); err != nil {
			return fmt.Errorf("centrifugo: undecodable reply %.80q: %w", line, err)
		}
		f(&r, false)
	}
	return nil
}

// cfToken mints a connection token for user: HS256 with sub and exp, the
// claims Centrifugo's client.token.hmac_secret_key verifies.
func cfToken(secret []byte, user string, ttl time.Duration) (string, error) {
	if len(secret) == 0 {
		return "", errors.New("centrifugo: token: empty secret")
	}
	now := time.Now()
	t := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{
		Subject: user, IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
	})
	s, err := t.SignedString(secret)
	if err != nil {
		return "", fmt.Errorf("centrifugo: sign token: %w", err)
	}
	return s, nil
}
