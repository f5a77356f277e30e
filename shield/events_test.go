package shield

import "time"

// The behaviours a mail server registers (agua's are in
// internal/mailevents, which this package's tests cannot import): the
// shield's own tests use them as any service would.
var (
	UnknownRecipient = MustRegister(Behaviour{Name: "unknown_recipient",
		Threshold: Threshold{Count: 20, Window: 10 * time.Minute},
		Reason:    "banned for too many unknown recipients"})
	PreGreet = MustRegister(Behaviour{Name: "pregreet",
		Threshold: Threshold{Count: 1, Window: time.Minute},
		Reason:    "banned for talking before the greeting"})
	MessageAccepted = MustRegister(Behaviour{Name: "message",
		Threshold: Threshold{Count: 500, Window: time.Minute},
		Network:   Threshold{Count: 3000, Window: time.Minute},
		Reason:    "too many messages, slow down", NetworkReason: "too many messages from your network, slow down",
		Temporary: true, KnownGood: true, Benign: true})
	RecipientAccepted = MustRegister(Behaviour{Name: "recipient",
		Threshold: Threshold{Count: 2000, Window: time.Minute},
		Reason:    "too many recipients, slow down", Temporary: true, Benign: true})
)
