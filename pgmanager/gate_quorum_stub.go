package pgmanager

// SetGateQuorum is a placeholder until the gate counts a quorum.
func (m *Manager) SetGateQuorum(q int, names []string) {}
