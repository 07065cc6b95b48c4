"""ROS 2 shells around the robot core: the arm driver, camera, teleop and recorder nodes.

Message conversion, parameter declaration and the shared ``main()`` live in ``ros/``
(``video2reward.ros``), the helpers every folder's nodes use.
"""
