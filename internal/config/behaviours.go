package config

// The mail behaviours (unknown_recipient, pregreet, message, recipient,
// network_message) register with the shield when internal/mailevents is
// initialised; importing it here makes their thresholds part of Default()
// and of the [shield.thresholds] section this package reads and documents.
import _ "github.com/agua-mail/agua/internal/mailevents"
