"""The xArm SDK's wire protocol, as much of it as the emulator serves: ports, codes, frames.

    from video2reward.sim.xarm_protocol import FN_MOVE_SERVO_CART, pack_frame
    reply = pack_frame(trans_id, prot_id, bytes([fn, flags]) + data)

Numbers are the SDK's own (``xarm.core.config.x_config.XCONF``, ``x_code``); the controller
model (sim/xarm_controller_model.py) answers requests in these terms and the socket server
(sim/xarm_emulator.py) frames them. A frame is the SDK's Modbus-TCP-like header
(transaction id, protocol id, length; big-endian) and a body.
"""

from __future__ import annotations

import struct

CONTROL_PORT = 502  # xarm.core.config.x_config.XCONF.SocketConf
REPORT_NORMAL_PORT, REPORT_RICH_PORT, REPORT_REAL_PORT = 30001, 30002, 30003

# Function codes (XCONF.UxbusReg) of the emulated subset.
FN_GET_VERSION, FN_GET_ROBOT_SN = 1, 2
FN_MOTION_EN, FN_SET_STATE, FN_GET_STATE, FN_GET_CMDNUM, FN_GET_ERROR = 11, 12, 13, 14, 15
FN_CLEAN_ERR, FN_CLEAN_WAR, FN_SET_MODE = 16, 17, 19
FN_MOVE_LINE, FN_MOVE_SERVO_CART = 21, 30
FN_SET_TCP_OFFSET, FN_SET_LOAD_PARAM = 35, 36
FN_GET_TCP_POSE, FN_GET_JOINT_POS = 41, 42
FN_TGPIO_MB_TIOUT, FN_RS485_RTU, FN_TGPIO_W16B, FN_TGPIO_R16B = 123, 124, 127, 128
FN_FEEDBACK_CHECK, FN_SET_FEEDBACK_TYPE = 253, 254
FB_MOTION_FINISH = 2  # XCONF.FeedbackType.MOTION_FINISH

# Controller error codes (xarm.core.config.x_code.ControllerErrorCodeMap).
ERR_KINEMATIC, ERR_JOINT_LIMIT, ERR_SPEED, ERR_COLLISION = 21, 23, 24, 31

# Controller states as the SDK reads them: 1 moving, 2 ready and idle, 4 stopped.
STATE_MOVING, STATE_READY, STATE_STOPPED = 1, 2, 4

# Reply state-byte flags (UxbusCmdTcp.check_private_protocol).
FLAG_ERROR, FLAG_WARN, FLAG_NOT_READY = 0x40, 0x20, 0x10

# xArm Gripper registers (XCONF.ServoConf) behind the tool RS-485 (host id 9, slave id 8).
GRIP_EN, GRIP_MODE, GRIP_SPEED, GRIP_RESET_ERR = 0x0100, 0x0101, 0x0303, 0x0109
GRIP_TARGET, GRIP_POS, GRIP_ERR = 0x0700, 0x0702, 0x000F
TOOL_BAUD_REG = 0x0A0B
GRIPPER_FULL_OPEN = 850.0
BAUD_INDEX_2M = 11  # index of 2_000_000 in UxbusCmd.BAUDRATES: the SDK's default gripper baud

HEADER_LEN = 6  # transaction id, protocol id, body length: three big-endian uint16
PROT_HEARTBEAT, PROT_FEEDBACK = 1, 3  # protocol ids: the SDK's heartbeat, motion feedback


def pack_frame(trans_id: int, prot_id: int, body: bytes) -> bytes:
    """One frame: the header, then ``body``."""
    return struct.pack(">HHH", trans_id, prot_id, len(body)) + body
